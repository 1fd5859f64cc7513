"""Token ids reserved in every vocabulary of this project.

The SentencePiece models trained by `transformer.data.tokenizer` place these
pieces at these ids, and the models, tasks and decoders rely on them:

- PAD_ID: padding; never attended to, never scored.
- EOS_ID: end of sequence; appended to every target, stops decoding.
- BOS_ID: beginning of sequence; the first decoder input ("shifted right").
- UNK_ID: unknown piece (rare: byte fallback covers every character).
"""

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3
