"""One run per workdir: `<workdir>/lock` names the owner (host, pid, start time).

    with WorkdirLock(workdir):      # WorkdirInUse (a ConfigError: one line, exit 2) if taken
      ...                           # the lock file is removed on the way out, error or not

The file is created with O_EXCL, so of two trainers starting together exactly one gets it.
A lock whose owner is gone (same host, the pid no longer runs) is stale: it is taken over
with a warning. A lock of another host cannot be checked from here and is never taken over.
In a multi-process run only process 0 takes the lock (`lock_for_run`); the others share it.
"""

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from transformer.cli import ConfigError

LOCK_FILE = "lock"


class WorkdirInUse(ConfigError):
  """Another live run holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, owned by someone else
    return True
  return True


def read_lock(workdir: str) -> dict[str, Any] | None:
  """The lock's {host, pid, started}, or None if there is no (readable) lock."""
  try:
    with open(os.path.join(workdir, LOCK_FILE)) as f:
      owner = json.load(f)
    return owner if isinstance(owner, dict) else {}
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # being written, or damaged


def is_stale(owner: dict[str, Any]) -> bool:
  """The owner's process is gone: same host and its pid no longer runs."""
  return owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
      and not _pid_alive(owner["pid"])


def live_owner(workdir: str) -> dict[str, Any] | None:
  """The lock's owner if it is another live process (not this one, not stale), else None."""
  owner = read_lock(workdir)
  if owner is None or is_stale(owner):
    return None
  if owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid():
    return None
  return owner


def describe(owner: dict[str, Any]) -> str:
  return (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
          f"(started {owner.get('started', '?')})")


class WorkdirLock:
  """The lock of `workdir` while in the `with` block (see the module docstring)."""

  def __init__(self, workdir: str, print_fn: Callable[[str], None] = print):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._print = print_fn
    self._held = False

  def acquire(self) -> "WorkdirLock":
    owner = {"host": socket.gethostname(), "pid": os.getpid(),
             "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    for attempt in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = read_lock(os.path.dirname(self.path)) or {}
        if attempt == 0 and is_stale(other):
          self._print(f"warning: taking over the stale lock {self.path} of {describe(other)}, "
                      "which is no longer running")
          try:
            os.unlink(self.path)
          except FileNotFoundError:
            pass
          continue
        raise WorkdirInUse(
            f"workdir {os.path.dirname(self.path)} is in use by {describe(other)}: wait for "
            f"that run to end, or use another --workdir (remove {self.path} only if that "
            "run is gone)") from None
      with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
      self._held = True
      return self
    raise WorkdirInUse(f"could not take the lock {self.path}")  # unreachable in practice

  def release(self) -> None:
    """Removes the lock file if this process holds it."""
    if self._held:
      self._held = False
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()


@contextlib.contextmanager
def lock_for_run(workdir: str, print_fn: Callable[[str], None]) -> Iterator[WorkdirLock | None]:
  """Process 0 holds the workdir's lock for the `with` block (None on the other processes);
  every process raises WorkdirInUse if process 0 could not take it."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir, print_fn).acquire()
    except WorkdirInUse as e:
      error = e
  if jax.process_count() > 1:
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed and error is None:
      error = WorkdirInUse(f"workdir {workdir} is in use by another run (process 0 could not "
                           "take its lock)")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
