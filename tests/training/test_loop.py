import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models.scan_conversion import stack_layers
from transformer.training import checkpoints, writer
from transformer.training.config import ConfigError
from transformer.training.loop import dry_run, run
from transformer.training.optim import make_optimizer


def run_logged(config, workdir):
  lines = []
  result = run(config, workdir, print_fn=lines.append)
  return result, "\n".join(lines)


def train_losses(workdir):
  return {r["step"]: r["loss"] for r in writer.read_jsonl(workdir) if r["split"] == "train"}


def test_run_writes_outputs_and_resume_continues_exactly(tiny_config, workdir_for):
  config = tiny_config("seq2seq")
  straight = workdir_for(config, "straight")
  result, log = run_logged(config, straight)
  assert "starting from scratch" in log and "sample 1" in log and "step 4/4" in log
  assert log.startswith("config (* = differs") and "  data: source='stdlib'" in log
  assert "compiling the train step ...\ncompiling the train step: done in " in log
  assert "| grad norm " in log
  records = [r for r in writer.read_jsonl(straight) if r["split"] == "train"]
  assert all(r["grad_norm"] > 0 for r in records)
  assert {"loss", "accuracy", "perplexity"} <= set(result)
  files = set(os.listdir(straight))
  assert {"config.json", "spm.model", "metrics.jsonl", "curves.png", "tensorboard",
          "checkpoints"} <= files
  assert os.listdir(os.path.join(straight, "tensorboard"))
  assert sorted(int(s) for s in os.listdir(os.path.join(straight, "checkpoints"))
                if s.isdigit()) == [2, 4]

  interrupted = workdir_for(config, "interrupted")
  config.async_checkpoints = True  # the data position is still the one at the saved step
  config.num_train_steps = 2
  run_logged(config, interrupted)
  config.num_train_steps = 4
  _, log = run_logged(config, interrupted)
  assert "resuming from the workdir's checkpoint at step 2" in log
  expected, resumed = train_losses(straight), train_losses(interrupted)
  assert sorted(resumed) == [1, 2, 3, 4]
  np.testing.assert_allclose([resumed[3], resumed[4]], [expected[3], expected[4]], rtol=1e-6)

  final, log = run_logged(config, interrupted)
  assert "already at step 4 of 4" in log and "nothing to train" in log
  assert "eval at" not in log and "sample 1" not in log and "sacreBLEU" not in log  # stops at once
  assert final == {k: v for k, v in writer.read_jsonl(interrupted)[-1].items()
                   if k not in ("step", "split")}  # the last eval of the run
  assert sorted(train_losses(interrupted)) == [1, 2, 3, 4]  # no retraining


def test_incompatible_workdir_is_rejected_before_training(tiny_config, workdir_for):
  config = tiny_config("seq2seq")
  workdir = workdir_for(config)
  checkpoints.write_config(workdir, config)
  config.model.d_model = 64
  with pytest.raises(ConfigError,
                     match=r"incompatible model config \(d_model: 32 in the workdir, 64 now\)"):
    run(config, workdir, print_fn=lambda line: None)


def test_init_from_restores_matching_params_and_reports_fresh_ones(tiny_config, workdir_for):
  pretrain = tiny_config("lm")
  pretrain.num_train_steps = 2
  pretrained = workdir_for(pretrain, "pretrain")
  run_logged(pretrain, pretrained)

  finetune = tiny_config("lm", stage="finetune")
  finetune.model.tie_output_embedding = False  # a new output head, initialised fresh
  finetune.init_from = pretrained
  finetune.num_train_steps = 1
  # The warmup's first rate is 0: the one update leaves the params put.
  finetune.optimizer.update(schedule="constant", learning_rate=1e-3, warmup_steps=10)
  finetuned = os.path.join(os.path.dirname(pretrained), "finetune")
  _, log = run_logged(finetune, finetuned)
  assert f"initialising from init_from={pretrained}" in log
  assert ("initialised fresh 1" in log
          and "fresh: decoder/output_projection/kernel (not in checkpoint)" in log)
  assert os.path.exists(os.path.join(finetuned, "spm.model"))  # the tokenizer comes along

  _, before, _ = checkpoints.load_params_for_inference(pretrained)
  cfg, after, tokenizer = checkpoints.load_params_for_inference(finetuned)
  assert cfg.deterministic and not cfg.tie_output_embedding and tokenizer.endswith("spm.model")
  np.testing.assert_array_equal(after["token_embedding"]["embedding"],
                                before["token_embedding"]["embedding"])
  assert "output_projection" in after["decoder"]


def test_init_from_converts_between_unrolled_and_scanned_layers(tiny_config, workdir_for):
  """A scanned fine-tuning run starts from an unrolled pretraining run: every param restored,
  stacked on the layer axis."""
  pretrain = tiny_config("lm")
  pretrain.num_train_steps = 1
  pretrained = workdir_for(pretrain, "pretrain")
  run_logged(pretrain, pretrained)

  finetune = tiny_config("lm", stage="finetune")
  finetune.model.scan_layers = True
  finetune.init_from = pretrained
  finetune.num_train_steps = 1
  finetune.optimizer.update(schedule="constant", learning_rate=1e-3, warmup_steps=10)
  finetuned = os.path.join(os.path.dirname(pretrained), "finetune")
  _, log = run_logged(finetune, finetuned)
  assert (f"converting the params of {pretrained} from unrolled to scanned layers "
          "(config.model.scan_layers=True)") in log
  assert "initialised fresh 0" in log

  cfg, before, _ = checkpoints.load_params_for_inference(pretrained)
  scanned_cfg, after, _ = checkpoints.load_params_for_inference(finetuned)
  assert scanned_cfg.scan_layers and "layers" in after["decoder"]
  jax.tree.map(np.testing.assert_array_equal, stack_layers(before, cfg), after)


def test_dry_run_prints_params_and_compiles(tiny_config):
  printed = []
  report = dry_run(tiny_config("seq2seq"), print_fn=printed.append)
  lines = "\n".join(printed).splitlines()
  overview_end = next(line for line in lines if line.startswith("params: "))
  assert overview_end == f"params: {report['params']:,} ({report['params'] / 1e6:.2f}M)"
  assert any("decoder/layer_0/cross_attention" in line for line in lines)
  assert report["flops_per_step"] > 0


def test_quiet_phases_are_announced_with_their_durations(tiny_config, tmp_path):
  config = tiny_config("seq2seq")
  config.data.data_dir = str(tmp_path / "tfds")  # nothing prepared: the corpus is built here
  config.update(num_train_steps=1, bleu_eval_batches=0, num_samples=0)
  _, log = run_logged(config, str(tmp_path / "run"))
  for what in ("building the corpus (stdlib_corpus/summarize)",
               "training the tokenizer (400 pieces)",
               "compiling the eval step and evaluating at step 0 (validation)",
               "compiling the train step"):
    assert f"{what} ...\n" in log and f"\n{what}: done in " in log, what


def test_train_log_has_the_label_smoothed_loss_and_the_applied_learning_rate(tiny_config,
                                                                             workdir_for):
  config = tiny_config("lm")
  config.update(label_smoothing=0.1, num_train_steps=3, eval_every_steps=100, num_samples=0)
  workdir = workdir_for(config)
  run(config, workdir, print_fn=lambda line: None)
  train = [r for r in writer.read_jsonl(workdir) if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  # label_smoothing reaches the train loss: the smoothed loss is not the plain NLL (equal at ε = 0).
  for record in train:
    assert abs(record["loss"] - record["nll"]) > 1e-3, record
  # The logged rate of step k is the rate of the k-th update: with a constant unit gradient, Adam's
  # update is exactly -rate (m̂ / sqrt(v̂) = 1), so the run's own optimizer shows what it applied.
  tx, _ = make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
  params = {"w": jnp.zeros(())}
  state, applied = tx.init(params), []
  for _ in train:
    update, state = tx.update({"w": jnp.ones(())}, state, params)
    applied.append(-float(update["w"]))
  assert len(set(np.round(applied, 6))) == 3  # warmup 2 then decay: three different rates
  np.testing.assert_allclose([r["learning_rate"] for r in train], applied, rtol=1e-5)
