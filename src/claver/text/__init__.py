"""Text side: CLIP tokenizer and prompt rows."""
