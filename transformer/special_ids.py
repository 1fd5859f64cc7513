"""Token ids reserved in every vocabulary of this project.

The SentencePiece models trained by `transformer.data.tokenizer` place these
pieces at these ids, and the models, tasks and decoders rely on them:

- PAD_ID: padding; never attended to, never scored.
- EOS_ID: end of sequence; appended to every target, stops decoding.
- BOS_ID: beginning of sequence; the first decoder input ("shifted right").
- UNK_ID: unknown piece (rare: byte fallback covers every character).
- `sentinel_id(k)`: the k-th span-corruption sentinel `<extra_id_k>`, right after UNK_ID.
"""

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3


def sentinel_id(k: int) -> int:
  """The id of the k-th span-corruption sentinel `<extra_id_k>` (k = 0, 1, ...)."""
  return UNK_ID + 1 + k
