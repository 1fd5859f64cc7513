"""`python -m transformer.data.builders --data_dir=DIR`: prepares the stdlib corpus, prints
counts."""

from transformer.data.builders import stdlib_corpus

stdlib_corpus.main()
