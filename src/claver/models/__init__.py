"""Model families: CLIP towers, Kronecker temporal attention, CLAVER, ActionCLIP."""
