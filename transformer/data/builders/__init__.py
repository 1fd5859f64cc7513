"""TFDS builders and record sources: the embedded stdlib corpus, the TFDS catalog, local files."""
