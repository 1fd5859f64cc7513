"""Task transforms against hand-computed examples and T5's reference numbers."""

import numpy as np
import pytest

from transformer import special_ids
from transformer.data import tasks
from transformer.special_ids import sentinel_id

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
  assert pref["response_0"].tolist() == [5, 7, 8, EOS]
  assert pref["response_0_weights"].tolist() == [0, 1, 1, 1]
  assert pref["response_1"].tolist() == [5, 9, EOS]
  assert pref["response_1_weights"].tolist() == [0, 1, 1]


def test_truncation_keeps_the_start_of_inputs_and_never_cuts_targets():
  out = tasks.seq2seq(np.arange(10, 20), np.array([7, 8]), max_inputs=4)
  assert out["inputs"].tolist() == [10, 11, 12, EOS] and out["targets"].tolist() == [7, 8, EOS]
  p = tasks.prefix_lm(np.arange(10, 20), np.array([7, 8]), max_len=6)
  assert p["targets"].tolist() == [10, 11, 12, 7, 8, EOS]
  assert len(p["targets"]) == 6 and p["targets"].tolist()[:3] == [10, 11, 12]
  too_long = tasks.prefix_lm(np.arange(10, 20), np.arange(30, 36), max_len=6)  # target alone: 7
  assert len(too_long["targets"]) == 17  # left over-long: the pipeline skips and counts it


@pytest.mark.parametrize("seed", range(20))
def test_preference_truncation_never_makes_responses_equal(seed):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(10, 20, size=rng.integers(1, 40))
  responses = [rng.integers(10, 13, size=rng.integers(1, 14)) for _ in range(4)]
  fields = (prompt, *responses)
  cfg = type("Cfg", (), dict(seq_len=12, num_responses=4, truncate_inputs=True, targets_len=0))
  for task in ("preference", "preference_seq2seq"):
    examples = tasks.TASKS[task].examples(fields, None, cfg)
    room = 12 - 2 if task == "preference" else 12 - 1  # EOS (and one prompt token)
    if (not tasks.distinct_responses(tuple(responses))
        or all(len(r) > room for r in responses[1:])):  # no pair left: the record is dropped
      assert examples == []
      continue
    (example,) = examples
    lengths = tasks.TASKS[task].lengths(cfg)
    for k, response in enumerate(responses):
      seq, weights = example[f"response_{k}"], example[f"response_{k}_weights"]
      if k and len(response) > room:  # a rejected response that cannot fit is left out
        assert len(seq) == 0 and len(weights) == 0
        continue
      assert seq[weights > 0].tolist() == response.tolist() + [EOS]  # never cut
      if tasks.fits(example, lengths):
        assert len(seq) <= 12
    for k in range(1, 4):  # distinct records stay distinct
      assert example["response_0"].tolist() != example[f"response_{k}"].tolist()
    if task == "preference":  # one shared prompt, its start kept
      kept = int(np.sum(example["response_0_weights"] == 0))
      assert example["response_0"][:kept].tolist() == prompt[:kept].tolist()


def test_rejected_pool_draws_k_minus_1_that_fit_in_stored_order():
  rejected = [np.full(20 if k == 3 else 1, 20 + k) for k in range(6)]  # rejected 3 cannot fit
  fields = (np.array([5, 6]), np.array([7]), *rejected)
  cfg = type("Cfg", (), dict(seq_len=8, targets_len=0, num_responses=3, rejected_pool=5,
                             truncate_inputs=True))
  drawn = set()
  for task in ("preference", "preference_seq2seq"):
    (fixed,) = tasks.TASKS[task].examples(fields, None, cfg)  # no generator: the first K - 1
    assert [fixed[f"response_{k}"][-2] for k in (1, 2)] == [20, 21]
    for seed in range(40):
      (example,) = tasks.TASKS[task].examples(fields, np.random.default_rng(seed), cfg)
      ids = tuple(int(example[f"response_{k}"][-2]) - 20 for k in (1, 2))
      assert ids[0] < ids[1] and set(ids) <= {0, 1, 2, 4}  # the pool's 4 that fit, in order
      assert example["response_0"][-2] == 7
      drawn.add(ids)
  assert len(drawn) == 6  # every 2 of the 4


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
