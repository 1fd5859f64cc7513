"""One run per workdir: a second trainer exits 2 naming the first and changes nothing; a stale
lock is taken over with a warning; a lock of another host is never taken over."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.training.test_preemption import ROOT, Trainer
from transformer.training import checkpoints, integrity
from transformer.training.lock import LOCK_FILE, WorkdirInUse, WorkdirLock, read_lock


def snapshot(workdir: str) -> dict[str, str]:
  """sha256 of every file under the workdir."""
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def test_a_second_trainer_exits_2_naming_the_first_and_changes_nothing(tiny_config, workdir_for,
                                                                       tmp_path):
  config = tiny_config("lm")
  config.update(num_train_steps=40, log_every_steps=1, eval_every_steps=40,
                checkpoint_every_steps=20, num_samples=0)
  workdir = workdir_for(config)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  first = Trainer(str(config_path), workdir)
  try:
    first.wait_for("step 1/")
    first.proc.send_signal(signal.SIGSTOP)  # hold the first run still while the second tries
    owner = read_lock(workdir)
    assert owner["pid"] == first.proc.pid and owner["host"] == socket.gethostname()
    before = snapshot(workdir)
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    second = subprocess.run(
        [sys.executable, "-m", "transformer.train",
         f"--config=tests/training/json_experiment.py:{config_path}", f"--workdir={workdir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: workdir {workdir} is in use by pid "
                                                   f"{first.proc.pid} on host "), lines
    assert snapshot(workdir) == before  # nothing of the first run changed
  finally:
    first.proc.send_signal(signal.SIGCONT)
  status, stdout, stderr = first.finish()
  assert status == 0 and "step 40/40" in stdout, stderr[-3000:]
  assert integrity.steps(checkpoints.checkpoint_dir(workdir))[0] == 40
  assert not os.path.exists(os.path.join(workdir, LOCK_FILE))


def dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def write_lock(workdir, **owner):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOCK_FILE), "w") as f:
    json.dump({"started": "2024-01-01T00:00:00", **owner}, f)


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
  workdir = str(tmp_path)
  pid = dead_pid()
  write_lock(workdir, host=socket.gethostname(), pid=pid)
  printed = []
  with WorkdirLock(workdir, printed.append):
    assert read_lock(workdir)["pid"] == os.getpid()
  assert printed == [f"warning: taking over the stale lock {workdir}/lock of pid {pid} on host "
                     f"{socket.gethostname()} (started 2024-01-01T00:00:00), which is no longer "
                     "running"]
  assert read_lock(workdir) is None  # released on the way out


@pytest.mark.parametrize("host, pid", [("another-host", 1), (None, None)])
def test_a_live_or_foreign_lock_is_refused(tmp_path, host, pid):
  workdir = str(tmp_path)
  write_lock(workdir, host=host or socket.gethostname(), pid=pid or os.getppid())
  with pytest.raises(WorkdirInUse, match=r"is in use by pid \d+ on host "):
    WorkdirLock(workdir).acquire()
  assert read_lock(workdir)["pid"] == (pid or os.getppid())  # untouched
