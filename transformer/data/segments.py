"""The token segments behind a causal-LM run's batches: what an n-gram counts and scores.

A packed row holds several segments (each predicted from BOS by the networks); an unpacked
row one. `segments` cuts batches back into those segments, so a count-based model can fit
and score exactly the target tokens a network trained or was evaluated on.
"""

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import ml_collections
import numpy as np

from transformer.data import pipeline


def segments(batches: Iterable[Mapping[str, np.ndarray]]) -> Iterator[np.ndarray]:
  """Each segment's target tokens, int [segment_length], from batches of `targets` [rows, L]
  (and `targets_segmentation` [rows, L] if packed; else the non-PAD tokens are one segment)."""
  for batch in batches:
    targets = np.asarray(batch["targets"])
    segmentation = np.asarray(batch.get("targets_segmentation", targets != 0))
    for row, row_segments in zip(targets, segmentation):
      for segment_id in np.unique(row_segments[row_segments > 0]):
        yield row[row_segments == segment_id]


def split_segments(data: ml_collections.ConfigDict, split: str, batch_size: int, batches: int,
                   tokenizer: Any) -> list[np.ndarray]:
  """The target segments of the first `batches` (0 = all) unpacked, in-order batches of `split`
  (the rows the trainer's eval reads)."""
  it = pipeline.make_dataset(data, split, global_batch_size=batch_size, seed=0, train=False,
                             process_index=0, process_count=1, tokenizer=tokenizer)
  out = []
  for index, batch in enumerate(it):
    if batches and index >= batches:
      break
    out.extend(segments([batch]))
  return out
