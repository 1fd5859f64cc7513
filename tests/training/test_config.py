import ml_collections
import pytest

from transformer.training.config import ConfigError, default_config, model_config, validate


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
