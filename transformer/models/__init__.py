"""Flax Linen models: the paper's Transformer (encoder-decoder and decoder-only)."""
