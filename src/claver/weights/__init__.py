"""Checkpoint formats, safe loading and verified downloads."""
