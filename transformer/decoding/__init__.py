"""Decoding: greedy, beam search and sampling with a KV cache.

`generate(model_config, params, prompts, method=...)` is the entry point; see
generation.py. cache.py builds the model's step function, sampling.py and
search.py hold the loops, prompts.py turns text into prompts and outputs back
into text, metrics.py and evaluation.py score seq2seq outputs.
"""

from transformer.decoding.generation import METHODS, generate, generate_texts

__all__ = ["METHODS", "generate", "generate_texts"]
