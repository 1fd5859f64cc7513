import os

import ml_collections
import pytest

from transformer.training.config import (
  ConfigError,
  default_config,
  field_docs,
  field_listing,
  flatten,
  format_config,
  model_config,
  validate,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_default_config_is_valid():
  validate(default_config())


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.__setattr__("stage", "distill"), "config.stage must be one of"),
    (lambda c: c.optimizer.__setattr__("name", "lamb"), "config.optimizer.name"),
    (lambda c: c.__setattr__("global_batch_size", 0), "config.global_batch_size must be >= 1"),
    (lambda c: c.update(global_batch_size=6, grad_accum_steps=4),
     "divisible by config.grad_accum_steps"),
    (lambda c: c.__setattr__("label_smoothing", 1.5), "config.label_smoothing"),
    (lambda c: c.model.__setattr__("num_heads", 3), "config.model.d_model"),
    (lambda c: c.data.__setattr__("task", "seq2seq"), "config.data.task"),
    (lambda c: c.update(stage="reward"), "does not train on data task"),
    (lambda c: (c.update(stage="finetune"),
                c.data.update(name="stdlib_corpus/summarize", task="seq2seq")),
     "needs config.model.architecture='encoder_decoder'"),
    (lambda c: (c.reward.update(pairing="all"), c.data.update(rejected_pool=3)),
     "config.data.rejected_pool must be 0 with config.reward.pairing='all'"),
])
def test_invalid_values_name_the_field(mutate, message):
  c = default_config()
  mutate(c)
  with pytest.raises(ConfigError, match=message) as info:
    validate(c)
  assert "\n" not in str(info.value)


def test_unknown_field_is_named():
  c = default_config()
  with c.unlocked():
    c.optimizer.lerning_rate = 0.1
  with pytest.raises(ConfigError, match="unknown config field config.optimizer.lerning_rate"):
    validate(c)


def test_wrong_type_is_named():
  c = default_config().to_dict()
  c["num_train_steps"] = "ten"
  with pytest.raises(ConfigError, match="config.num_train_steps must be of type int"):
    validate(ml_collections.ConfigDict(c))


def test_model_vocabulary_is_the_data_vocabulary():
  c = default_config()
  c.data.vocab_size = 1234
  assert model_config(c).vocab_size == 1234


def quickstart():
  from tests.training.conftest import load_experiment
  return load_experiment("quickstart")


def test_a_raised_seq_len_without_max_len_is_one_line():
  c = quickstart()
  c.data.seq_len = 256  # the encoder inputs the run's BLEU eval and samples decode
  with pytest.raises(ConfigError) as info:
    validate(c)
  message = str(info.value)
  assert "\n" not in message and message.startswith("config.data.seq_len = 256")
  assert "raise config.model.max_len (128) to at least 256" in message
  c.model.max_len = 256
  validate(c)


def test_learned_positions_hold_every_length_of_the_task():
  c = default_config()
  c.model.position_encoding = "learned"
  c.data.seq_len = 512
  with pytest.raises(ConfigError, match=r"config.data.seq_len = 512 does not fit the learned "
                                        r"position table: raise config.model.max_len \(256\)"):
    validate(c)
  c.model.position_encoding = "sinusoidal"  # no table: a longer training length is fine
  validate(c)
  c = quickstart()
  c.model.position_encoding = "learned"
  c.data.targets_len = 200
  with pytest.raises(ConfigError, match="config.data.targets_len = 200 does not fit"):
    validate(c)


def test_decoded_lengths_fit_the_model():
  c = quickstart()
  c.max_decode_length = 129
  with pytest.raises(ConfigError, match="config.max_decode_length = 129 does not fit the decoder"):
    validate(c)
  c.update(num_samples=0, bleu_eval_batches=0)  # nothing decoded: nothing to fit
  validate(c)


def test_the_dry_run_checks_lengths_too():
  from transformer.training.loop import dry_run
  c = quickstart()
  c.data.seq_len = 256
  with pytest.raises(ConfigError, match="config.data.seq_len = 256"):
    dry_run(c, print_fn=lambda line: None)


def test_the_field_listing_covers_every_field_of_the_schema():
  docs = field_docs()
  fields = set(flatten(default_config()))
  assert fields <= set(docs), sorted(fields - set(docs))
  assert all(docs[name] for name in fields), [name for name in fields if not docs[name]]
  listed = {line.split("`")[1] for line in field_listing().splitlines() if line.startswith("| `")}
  assert listed == fields


def test_docs_config_md_is_the_generated_listing():
  with open(os.path.join(ROOT, "docs", "config.md")) as f:
    assert f.read() == field_listing(), (
        "docs/config.md is stale: python -m transformer.training.config --list > docs/config.md")


def test_field_docs_read_wrapped_comments_and_the_model_docstring():
  assert field_docs()["optimizer.b2"] == "Adam β2 (paper: 0.98)."
  assert field_docs()["model.max_len"].startswith("longest sequence")
  assert field_docs()["data.vocab_size"].startswith("SentencePiece vocabulary size")


def test_format_config_marks_what_differs_from_the_defaults():
  c = quickstart()
  lines = format_config(c).splitlines()
  assert "  stage = 'finetune'*" in lines and "  seed = 0" in lines
  assert "  data.seq_len = 128*" in lines and "  optimizer.b1 = 0.9" in lines
  assert len(lines) == 1 + len(flatten(default_config()))
  compact = format_config(c, compact=True)
  assert all(len(line) <= 100 for line in compact.splitlines())
  assert "stage='finetune'*" in compact and " seed=0 " in compact
