"""Task transforms against hand-computed examples and T5's reference numbers."""

import numpy as np
import pytest

from transformer import special_ids
from transformer.data import tasks
from transformer.data.tokenizer import sentinel_id

EOS = special_ids.EOS_ID


def test_lm_chunks_append_eos_and_cut():
  chunks = tasks.lm_chunks(np.array([10, 11, 12, 13, 14]), seq_len=4)
  assert [c["targets"].tolist() for c in chunks] == [[10, 11, 12, 13], [14, EOS]]
  assert all(c["targets"].dtype == np.int32 for c in chunks)


def test_seq2seq_prefix_lm_preference():
  assert {k: v.tolist() for k, v in tasks.seq2seq(np.array([5, 6]), np.array([7])).items()} == {
      "inputs": [5, 6, EOS], "targets": [7, EOS]}
  p = tasks.prefix_lm(np.array([5, 6]), np.array([7]))
  assert p["targets"].tolist() == [5, 6, 7, EOS]
  assert p["targets_weights"].tolist() == [0, 0, 1, 1] and p["targets_weights"].dtype == np.float32
  pref = tasks.preference(np.array([5]), np.array([7, 8]), np.array([9]))
  assert (pref["chosen"].tolist() == [5, 7, 8, EOS]
          and pref["chosen_weights"].tolist() == [0, 1, 1, 1])
  assert pref["rejected"].tolist() == [5, 9, EOS] and pref["rejected_weights"].tolist() == [0, 1, 1]


def test_corrupt_spans_hand_computed():
  tokens = np.arange(100, 110)
  mask = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 1], bool)
  out = tasks.corrupt_spans(tokens, mask)
  s0, s1, s2 = (sentinel_id(k) for k in range(3))
  assert out["inputs"].tolist() == [100, s0, 103, 104, 105, s1, 107, 108, s2, EOS]
  assert out["targets"].tolist() == [s0, 101, 102, s1, 106, s2, 109, EOS]


def _reconstruct(inputs, targets):
  """Plain-python inverse of span corruption: sentinel k in inputs -> the tokens after it in
  targets."""
  spans, current = {}, None
  for t in targets[:-1]:
    if t >= sentinel_id(0) and t < sentinel_id(100):
      current = t
      spans[current] = []
    else:
      spans[current].append(t)
  out = []
  for t in inputs[:-1]:
    out.extend(spans[t] if t in spans else [t])
  return out


def test_span_corruption_sentinels_in_order_and_reconstruct():
  rng = np.random.default_rng(0)
  for length in (2, 3, 10, 57, 200, 568):
    tokens = rng.integers(200, 1000, size=length)
    out = tasks.span_corruption(tokens, rng)
    sentinels = [t for t in out["inputs"].tolist() if sentinel_id(0) <= t < sentinel_id(100)]
    assert sentinels == [sentinel_id(k) for k in range(len(sentinels))]
    assert [t for t in out["targets"].tolist()
            if sentinel_id(0) <= t < sentinel_id(100)] == sentinels
    assert out["inputs"][-1] == EOS and out["targets"][-1] == EOS
    assert _reconstruct(out["inputs"].tolist(), out["targets"].tolist()) == tokens.tolist()


def test_span_corruption_statistics():
  rng = np.random.default_rng(1)
  noise = spans = total = 0
  for _ in range(2000):
    mask = tasks.random_spans_noise_mask(100, rng)
    noise += mask.sum()
    spans += (mask & ~np.concatenate([[False], mask[:-1]])).sum()
    total += len(mask)
  assert noise / total == pytest.approx(0.15, abs=0.005)
  assert noise / spans == pytest.approx(3.0, abs=0.1)


def test_span_corruption_lengths_match_t5():
  # T5's random_spans_helper: inputs 512 -> 568 raw tokens, 114 targets.
  assert tasks.span_corruption_lengths(512) == (568, 114)
  raw, targets_len = tasks.span_corruption_lengths(64)
  rng = np.random.default_rng(2)
  for _ in range(200):
    out = tasks.span_corruption(np.arange(raw) + 500, rng)
    assert len(out["inputs"]) <= 64 and len(out["targets"]) <= targets_len


def test_span_corruption_rejects_single_token():
  with pytest.raises(ValueError, match="at least 2 tokens"):
    tasks.span_corruption(np.array([5]), np.random.default_rng(0))


def test_pad_example():
  out = tasks.pad_example({"targets": np.array([5, 6, EOS], np.int32),
                           "targets_weights": np.array([0, 1, 1], np.float32)},
                          {"targets": 5, "targets_weights": 5}, with_segmentation=True)
  assert out["targets"].tolist() == [5, 6, EOS, 0, 0]
  assert out["targets_segmentation"].tolist() == [1, 1, 1, 0, 0]
  assert out["targets_position"].tolist() == [0, 1, 2, 3, 4]
  assert out["targets_weights"].tolist() == [0, 1, 1, 0, 0]
  assert set(out) == {"targets", "targets_segmentation", "targets_position", "targets_weights"}
