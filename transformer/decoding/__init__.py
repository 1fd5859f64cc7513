"""Decoding: greedy, beam search and sampling with a KV cache."""
