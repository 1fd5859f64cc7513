"""`transformer`: the Transformer of "Attention Is All You Need" in JAX/Flax, and the LLM pipeline
around it."""
