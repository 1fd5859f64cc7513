"""The grain pipeline: config validation, batch shapes per task, packing, masks, state, sharding,
catalog."""

import json
import logging

import grain
import grain.python
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from transformer import special_ids
from transformer.data import config as data_config
from transformer.data import pipeline
from transformer.data.builders import catalog
from transformer.models import attention
from transformer.special_ids import sentinel_id


def _dataset(cfg, tokenizer, split="train", *, train=True, batch=4, seed=0, process_index=0,
             process_count=1):
  return pipeline.make_dataset(cfg, split, global_batch_size=batch, seed=seed, train=train,
                               process_index=process_index, process_count=process_count,
                               tokenizer=tokenizer)


@pytest.mark.parametrize("overrides,field", [
    (dict(source="web"), "data.source"),
    (dict(task="mlm"), "data.task"),
    (dict(name="stdlib_corpus/poems"), "data.name"),
    (dict(source="tfds", name="imagenet2012"), "data.name"),
    (dict(source="files", file_pattern=""), "data.file_pattern"),
    (dict(task="seq2seq"), "data.task"),  # the text config holds documents, not pairs
    (dict(seq_len=0), "data.seq_len"),
    (dict(vocab_size=200), "data.vocab_size"),
    (dict(spm_model_type="wordpiece"), "data.spm_model_type"),
    (dict(noise_density=1.5), "data.noise_density"),
    (dict(task="span_corruption", seq_len=512, num_sentinels=10), "data.num_sentinels"),
    (dict(task="preference", name="stdlib_corpus/preferences", num_responses=4, rejected_pool=2),
     "data.rejected_pool"),
    (dict(task="preference", name="stdlib_corpus/preferences", rejected_pool=16),
     "data.rejected_pool"),
])
def test_invalid_config_names_the_field(small_config, overrides, field):
  with pytest.raises(ValueError, match=field):
    data_config.validate_data_config(small_config(**overrides))


def test_global_batch_must_divide(small_config, tokenizer):
  with pytest.raises(ValueError, match="global_batch_size"):
    _dataset(small_config(), tokenizer, batch=6, process_count=4)


def test_missing_files_name_the_pattern(small_config, tokenizer, tmp_path):
  cfg = small_config(source="files", file_pattern=str(tmp_path / "{split}-*.txt"))
  with pytest.raises(ValueError, match="file_pattern: no file matches"):
    _dataset(cfg, tokenizer)


EXPECTED_KEYS = {
    "lm": {"targets", "targets_segmentation", "targets_position"},
    "prefix_lm": {"targets", "targets_segmentation", "targets_position", "targets_weights"},
    "seq2seq": {f"{k}{s}" for k in ("inputs", "targets")
                for s in ("", "_segmentation", "_position")},
    "span_corruption": {f"{k}{s}" for k in ("inputs", "targets")
                        for s in ("", "_segmentation", "_position")},
    "preference": {"response_0", "response_1", "response_0_weights", "response_1_weights"},
}
NAMES = {"lm": "text", "span_corruption": "text", "seq2seq": "summarize", "prefix_lm": "summarize",
         "preference": "preferences"}


@pytest.mark.parametrize("task", sorted(EXPECTED_KEYS))
@pytest.mark.parametrize("train", [True, False])
def test_batch_shapes_per_task(small_config, tokenizer, task, train):
  cfg = small_config(task=task, name=f"stdlib_corpus/{NAMES[task]}", seq_len=96, targets_len=24)
  batch = next(_dataset(cfg, tokenizer, "validation", train=train, batch=4))
  assert set(batch) == EXPECTED_KEYS[task]
  lengths = data_config.task_lengths(cfg)
  for key, value in batch.items():
    base = key.replace("_segmentation", "").replace("_position", "")
    assert value.shape == (4, lengths[base]), key
    assert value.dtype == (np.float32 if key.endswith("_weights") else np.int32), key
  if task == "preference":
    real = batch["response_0"].any(axis=1)
    assert real.any()
    for key in ("response_0", "response_1"):
      last = (batch[key] != 0).sum(axis=1)[real] - 1
      assert (batch[key][real][np.arange(len(last)), last] == special_ids.EOS_ID).all()
      assert (batch[f"{key}_weights"][real][np.arange(len(last)), last] == 1).all()
      assert ((batch[f"{key}_weights"] > 0) <= (batch[key] != 0)).all()
  else:
    seg = batch["targets_segmentation"]
    assert ((seg > 0) == (batch["targets"] != 0)).all()
    if not train:
      assert (batch["targets_position"] == np.arange(lengths["targets"])).all()
  if task == "span_corruption":
    ids = batch["inputs"]
    assert ((ids >= sentinel_id(0)) & (ids < sentinel_id(24))).any()


def test_rejected_pool_draws_anew_each_epoch_and_evaluation_keeps_the_first(small_config,
                                                                           tokenizer):
  cfg = small_config(task="preference", name="stdlib_corpus/preferences", seq_len=96,
                     num_responses=3)
  pooled = cfg.copy_and_resolve_references()
  pooled.rejected_pool = 15
  fixed = next(_dataset(cfg, tokenizer, "validation", train=False, batch=8))
  assert all((next(_dataset(pooled, tokenizer, "validation", train=False, batch=8))[k]
              == fixed[k]).all() for k in fixed)
  records = len(pipeline.open_source(cfg, "validation"))
  train = _dataset(pooled, tokenizer, "validation", train=True, batch=1)
  seen = {}  # chosen response -> the rejected ones of each epoch
  for _ in range(3 * records):
    batch = next(train)
    seen.setdefault(batch["response_0"].tobytes(), set()).add(
        batch["response_1"].tobytes() + batch["response_2"].tobytes())
  assert max(len(v) for v in seen.values()) > 1  # another draw in another epoch


def _segments(row_ids, row_seg):
  return [row_ids[row_seg == s].tolist() for s in range(1, row_seg.max() + 1)]


def test_packing_matches_plain_python_reference(small_config, tokenizer):
  cfg = small_config(seq_len=64)
  # Plain-python reference: every document + EOS cut into 64-token chunks.
  reference = set()
  for record in pipeline.open_source(cfg, "validation"):
    stream = tokenizer.encode(record["text"].decode()).tolist() + [special_ids.EOS_ID]
    reference |= {tuple(stream[i:i + 64]) for i in range(0, len(stream), 64)}
  it = _dataset(cfg, tokenizer, "validation", batch=8)
  seen, pad = set(), 0
  for batch in (next(it) for _ in range(30)):
    for ids, seg, pos in zip(batch["targets"], batch["targets_segmentation"],
                             batch["targets_position"]):
      used = seg > 0
      assert used[: used.sum()].all()  # padding only at the end
      assert (np.diff(seg[used]) >= 0).all() and set(seg[used]) == set(range(1, seg.max() + 1))
      for s in range(1, seg.max() + 1):
        assert (pos[seg == s] == np.arange((seg == s).sum())).all()
      segments = _segments(ids, seg)
      assert all(tuple(x) in reference for x in segments)
      seen |= {tuple(x) for x in segments}
      pad += (~used).sum()
  assert len(seen) > 0.9 * min(len(reference), 240)
  assert pad / (30 * 8 * 64) < 0.05


def _reference_mask(q_seg, k_seg, causal):
  """Plain-python attention mask [B, 1, Lq, Lk]: same non-zero segment (and key <= query if
  causal)."""
  b, lq = q_seg.shape
  lk = k_seg.shape[1]
  out = np.zeros((b, 1, lq, lk), bool)
  for n in range(b):
    for i in range(lq):
      for j in range(lk):
        out[n, 0, i, j] = q_seg[n, i] != 0 and q_seg[n, i] == k_seg[n, j] and (not causal or j <= i)
  return out


def test_packed_examples_never_attend_across_segments(small_config, tokenizer):
  cfg = small_config(task="seq2seq", name="stdlib_corpus/summarize", seq_len=128, targets_len=64,
                     truncate_inputs=False)  # long inputs skipped, not cut to fill whole rows
  batch = next(_dataset(cfg, tokenizer, batch=4))
  q, k = batch["targets_segmentation"], batch["inputs_segmentation"]
  assert (q.max(axis=1) > 1).any() and (k.max(axis=1) > 1).any(), "expected packed rows"
  lm_batches = (b["targets_segmentation"] for b in _dataset(small_config(), tokenizer, batch=4))
  lm = next(seg for seg in lm_batches if (seg.max(axis=1) > 1).any())  # a batch with packed rows
  for query, key, causal in ((q, q, True), (q, k, False), (lm, lm, True)):
    mask = np.asarray(attention.make_attention_mask(query, key, causal=causal))
    np.testing.assert_array_equal(mask, _reference_mask(query, key, causal))
    rows, i, j = np.nonzero(mask[:, 0])
    assert len(rows) and (query[rows, i] == key[rows, j]).all() and (query[rows, i] > 0).all()
    if causal:
      assert (j <= i).all()


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y) and all((x[k] == y[k]).all() for k in x)


@pytest.mark.parametrize("task", ["lm", "span_corruption"])
def test_state_restored_mid_epoch_gives_same_batches(small_config, tokenizer, task):
  cfg = small_config(task=task)
  it = _dataset(cfg, tokenizer, seed=3)
  _take(it, 5)
  state = it.get_state()
  expected = _take(it, 4)
  restored = _dataset(cfg, tokenizer, seed=3)
  restored.set_state(json.loads(json.dumps(state)))
  _assert_same(_take(restored, 4), expected)


def test_state_round_trips_through_orbax(small_config, tokenizer, tmp_path):
  cfg = small_config()
  it = _dataset(cfg, tokenizer, seed=1)
  _take(it, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.python.PyGrainCheckpointSave(it)))
    manager.wait_until_finished()
    expected = _take(it, 3)
    restored = _dataset(cfg, tokenizer, seed=1)
    manager.restore(3, args=ocp.args.Composite(
        data=grain.python.PyGrainCheckpointRestore(restored)))
  _assert_same(_take(restored, 3), expected)


def test_seeds_change_the_order(small_config, tokenizer):
  a = next(_dataset(small_config(), tokenizer, seed=0))["targets"]
  b = next(_dataset(small_config(), tokenizer, seed=1))["targets"]
  assert not (a == b).all()


def _rows(batches, key):
  return {tuple(r[r != 0].tolist()) for b in batches for r in b[key] if r.any()}


def _assert_blocks_of(parts, whole):
  """Every process has as many batches as one process has, and batch i of process p is rows
  [p · B/n, (p + 1) · B/n) of one process's batch i (the global array's layout)."""
  assert [len(p) for p in parts] == [len(whole)] * len(parts)
  for i, expected in enumerate(whole):
    for key, value in expected.items():
      np.testing.assert_array_equal(np.concatenate([p[i][key] for p in parts]), value,
                                    err_msg=f"{i} {key}")


def test_eval_batches_are_blocks_of_the_one_process_batches(small_config, tokenizer):
  cfg = small_config(task="seq2seq", name="stdlib_corpus/summarize", seq_len=128, targets_len=32)
  whole = list(_dataset(cfg, tokenizer, "validation", train=False, batch=8))
  parts = [list(_dataset(cfg, tokenizer, "validation", train=False, batch=8, process_index=i,
                         process_count=2))
           for i in range(2)]
  assert all(b["inputs"].shape == (4, 128) for p in parts for b in p)
  assert whole[-1]["inputs_segmentation"].shape == (8, 128)
  _assert_blocks_of(parts, whole)
  assert _rows(parts[0], "inputs").isdisjoint(_rows(parts[1], "inputs"))


# 7 records, 5 fit.
EVAL_TSV = "".join(f"{text}\tok\n" for text in (
    "first", "second", "third", "long " * 200, "fourth", "long " * 300, "fifth"))


def test_every_process_runs_the_same_eval_batches_whatever_the_filter_drops(small_config, tokenizer,
                                                                             tmp_path):
  # Sharding the 7 records before the over-long filter would give process 0 records 0, 2, 4, 6
  # (4 fit: 2 batches of 2) and process 1 records 1, 3, 5 (1 fits: 1 batch): a multi-host hang.
  (tmp_path / "validation.tsv").write_text(EVAL_TSV)
  cfg = small_config(source="files", name="", task="seq2seq",
                     file_pattern=str(tmp_path / "{split}.tsv"), seq_len=32, targets_len=8,
                     truncate_inputs=False)
  whole = list(_dataset(cfg, tokenizer, "validation", train=False, batch=4))
  assert (len(whole) == 2 and whole[0]["inputs"].any(axis=1).all()
          and whole[1]["inputs"].any(axis=1).sum() == 1)
  for count in (2, 4):
    parts = [list(_dataset(cfg, tokenizer, "validation", train=False, batch=4, process_index=i,
                           process_count=count)) for i in range(count)]
    assert all(b["inputs"].shape == (4 // count, 32) for p in parts for b in p)
    _assert_blocks_of(parts, whole)
  texts = [tokenizer.decode(row[row > special_ids.EOS_ID].tolist())
           for b in whole for row in b["inputs"]]
  assert texts[:5] == ["first", "second", "third", "fourth", "fifth"] and texts[5:] == ["", "", ""]


def test_workers_give_the_same_batches(small_config, tokenizer):
  cfg = small_config()
  expected = _take(_dataset(cfg, tokenizer, seed=2), 3)
  it = _dataset(small_config(num_workers=1), tokenizer, seed=2)
  _assert_same(_take(it, 3), expected)
  it.close()


def test_over_long_examples_are_skipped_and_counted(small_config, tokenizer, tmp_path, caplog):
  (tmp_path / "train.tsv").write_text("short\tok\n" + "long " * 200 + "\tok\nalso short\tfine\n")
  cfg = small_config(source="files", name="", task="seq2seq",
                     file_pattern=str(tmp_path / "{split}.tsv"), seq_len=32, targets_len=8,
                     truncate_inputs=False)  # skipped, not cut
  with caplog.at_level(logging.WARNING):
    batches = list(_dataset(cfg, tokenizer, train=False, batch=4))
  assert len(batches) == 1 and (batches[0]["inputs"].any(axis=1)).sum() == 2
  assert "skipped 1 over-long examples" in caplog.text


def test_load_tokenizer_for_trains_once_then_reuses(small_config, tmp_path):
  cfg = small_config(vocab_size=400, num_sentinels=4)
  tok = pipeline.load_tokenizer_for(cfg, str(tmp_path))
  mtime = (tmp_path / "spm.model").stat().st_mtime_ns
  again = pipeline.load_tokenizer_for(cfg, str(tmp_path))
  assert ((tmp_path / "spm.model").stat().st_mtime_ns == mtime
          and again.vocab_size == tok.vocab_size == 400)
  with pytest.raises(ValueError, match="data.vocab_size"):
    pipeline.load_tokenizer_for(small_config(vocab_size=500, num_sentinels=4), str(tmp_path))


@pytest.mark.parametrize("name,task", [
    ("wmt14_translate/de-en", "seq2seq"),
    ("wmt_t2t_translate/de-en", "seq2seq"),
    ("wmt14_translate/de-en", "prefix_lm"),
    ("lm1b", "lm"),
    ("c4/en", "lm"),
    ("c4/en", "span_corruption"),
])
@pytest.mark.parametrize("train", [True, False])
def test_catalog_datasets_under_mock_data(small_config, tokenizer, name, task, train):
  cfg = small_config(source="tfds", name=name, task=task, seq_len=48, targets_len=16)
  with tfds.testing.mock_data(num_examples=20):
    it = _dataset(cfg, tokenizer, "train" if train else "validation", train=train, batch=4)
    batch = next(it)
  assert set(batch) == EXPECTED_KEYS[task]
  lengths = data_config.task_lengths(cfg)
  for key, value in batch.items():
    base = key.replace("_segmentation", "").replace("_position", "")
    assert value.shape == (4, lengths[base]), key
  assert (batch["targets_segmentation"] > 0).any()


@pytest.mark.parametrize("name", ["wmt14_translate/de-en", "wmt_t2t_translate/de-en"])
def test_catalog_translation_goes_english_to_german(small_config, tokenizer, monkeypatch, name):
  records = [{"de": b"das ist ein Haus", "en": b"this is a house"},
             {"de": b"der Hund", "en": b"the dog"}]
  monkeypatch.setattr(catalog, "catalog_source", lambda *args: records)
  cfg = small_config(source="tfds", name=name, task="seq2seq", seq_len=48, targets_len=16)
  batch = next(_dataset(cfg, tokenizer, "validation", train=False, batch=2))
  text = lambda row: tokenizer.decode(row[row > special_ids.EOS_ID].tolist())  # noqa: E731
  assert [text(row) for row in batch["inputs"]] == ["this is a house", "the dog"]
  assert [text(row) for row in batch["targets"]] == ["das ist ein Haus", "der Hund"]


def test_packing_efficiency_at_256(small_config, tokenizer):
  stats = pipeline.packing_stats(_dataset(small_config(seq_len=256), tokenizer, batch=16), 10)
  assert stats["targets_segmentation_non_pad_fraction"] >= 0.95 and stats["rows"] == 160


def test_unprepared_catalog_dataset_names_the_field(small_config, tokenizer, tmp_path):
  cfg = small_config(source="tfds", name="lm1b", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="name: TFDS dataset 'lm1b' split 'train' is not prepared"):
    _dataset(cfg, tokenizer)
