"""Data: TFDS builders, tokenizer, task transforms and grain pipelines."""
