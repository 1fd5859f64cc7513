"""SIGTERM and SIGINT between checkpoints: the trainer finishes its step, saves there, says how
to resume and exits 0 (SIGINT: 130) without a traceback; the rerun of the same command ends
with params bitwise equal to an uninterrupted run's."""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from tests.training.conftest import cached_tokenizer, tiny_experiment
from transformer.training import checkpoints, integrity, writer
from transformer.training.loop import run
from transformer.training.preemption import StopRequests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 100  # checkpoints at 50 and 100: the signal comes after a few steps, between them


def preemptible_config(tiny_config):
  config = tiny_config("lm")
  config.update(num_train_steps=STEPS, log_every_steps=1, eval_every_steps=STEPS,
                checkpoint_every_steps=STEPS // 2, num_samples=0)
  return config


class Trainer:
  """`python -m transformer.train` in a subprocess, its stdout read line by line."""

  def __init__(self, config_path: str, workdir: str):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    experiment = os.path.join(ROOT, "tests", "training", "json_experiment.py")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "transformer.train", f"--config={experiment}:{config_path}",
         f"--workdir={workdir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    self.lines: queue.Queue = queue.Queue()
    self.stdout: list[str] = []
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.put(line)
    self.lines.put(None)

  def wait_for(self, prefix: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      try:
        line = self.lines.get(timeout=1.0)
      except queue.Empty:
        continue
      if line is None:
        break
      self.stdout.append(line)
      if line.startswith(prefix):
        return
    self.proc.kill()
    raise AssertionError(f"no line {prefix!r}:\n{''.join(self.stdout)}{self.proc.stderr.read()}")

  def finish(self, timeout: float = 120.0) -> tuple[int, str, str]:
    status = self.proc.wait(timeout=timeout)
    while (line := self.lines.get(timeout=10)) is not None:
      self.stdout.append(line)
    return status, "".join(self.stdout), self.proc.stderr.read()


def final_params(workdir):
  params, step = checkpoints.restore_raw_params(workdir)
  assert step == STEPS
  return jax.tree.map(np.asarray, params)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, tokenizer_dir):
  """Params of the uninterrupted run (its workdir holds the session's trained tokenizer)."""
  config = preemptible_config(lambda task: tiny_experiment(data_dir, task))
  workdir = tmp_path_factory.mktemp("uninterrupted")
  shutil.copyfile(cached_tokenizer(config, tokenizer_dir), checkpoints.tokenizer_path(str(workdir)))
  run(config, str(workdir), print_fn=lambda line: None)
  return final_params(str(workdir))


@pytest.mark.parametrize("sig, status", [
    (signal.SIGTERM, 0), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_a_signal_saves_where_it_stopped_and_the_rerun_matches(
    sig, status, reference, tiny_config, workdir_for, tmp_path):
  config = preemptible_config(tiny_config)
  workdir = workdir_for(config)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())

  trainer = Trainer(str(config_path), workdir)
  trainer.wait_for("step 3/")
  trainer.proc.send_signal(sig)
  code, stdout, stderr = trainer.finish()
  name = signal.Signals(sig).name
  assert code == status, stdout[-2000:] + stderr[-3000:]
  assert "Traceback" not in stdout + stderr, stderr[-3000:]
  stopped = [line for line in stdout.splitlines() if line.startswith(f"stopped by {name} at step ")]
  assert len(stopped) == 1, stdout[-2000:]
  step = int(stopped[0].split(" at step ")[1].split(":")[0])
  assert 3 <= step < STEPS // 2, stopped
  assert stopped[0] == (f"stopped by {name} at step {step}: saved checkpoint {step}; "
                        "rerun the same command to resume")
  directory = checkpoints.checkpoint_dir(workdir)
  assert integrity.steps(directory) == [step]
  assert integrity.verify(os.path.join(directory, str(step))) is None
  assert not os.path.exists(os.path.join(workdir, "lock"))

  lines = []
  run(config, workdir, print_fn=lines.append)  # the same command again
  assert f"resuming from the workdir's checkpoint at step {step}" in "\n".join(lines)
  resumed = final_params(workdir)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(resumed),
                                                  jax.tree.leaves(reference)))
  train_steps = [r["step"] for r in writer.read_jsonl(workdir) if r["split"] == "train"]
  assert train_steps == list(range(1, STEPS + 1))  # one record per step, none replayed


def test_the_time_limit_stops_like_sigterm(tiny_config, workdir_for):
  config = preemptible_config(tiny_config)
  config.time_limit_seconds = 1e-6  # passed by the first check: stop before training
  lines = []
  with pytest.raises(SystemExit) as stop:
    run(config, workdir_for(config), print_fn=lines.append)
  assert stop.value.code == 0
  assert lines[-1] == ("stopped by the time limit (config.time_limit_seconds) at step 0: nothing "
                       "trained since the start, nothing to save; rerun the same command to resume")


def test_handlers_come_back_after_the_run():
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with StopRequests() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert stop.check(5).cause == "SIGTERM" and stop.check(5).status == 0
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
