"""Stopping a run cleanly: SIGTERM or SIGINT (preemption, Ctrl-C), or a time limit.

    with StopRequests(time_limit_seconds, agree_every_steps, on_abort=[lock.release]) as stop:
      while step < last_step:
        if (request := stop.check(step)):      # the same answer on every process
          ...save at `step`...; print(request.message(step, saved)); raise request.exit()

The first SIGTERM (what SLURM and TPU VMs send before preempting) or SIGINT (Ctrl-C) only
sets a flag: the loop finishes the step it is in, saves a checkpoint at the step reached and
exits 0 (SIGINT: 130), with no traceback. A second signal aborts at once (exit 128 + signal
number) after the `on_abort` callbacks, without saving. A time limit (`time_limit_seconds`
after the start, 0 = none) stops the same way as SIGTERM.

One process reads its flag every step (no cost). In a multi-process run each process only
sees its own signals, so every `agree_every_steps` steps they all-gather their flags (one
int per process, ~5 ms on CPU loopback; it also waits for the step in flight) and all stop
at the same step. Handlers are installed only from the main thread, and an ignored signal
(SIG_IGN, e.g. SIGINT of a background job) stays ignored; the previous handlers come back
on exit.
"""

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass(frozen=True)
class StopRequest:
  """Why a run stops early: `cause` for the message, `status` the exit status."""
  cause: str
  status: int

  def message(self, step: int, saved: int | None) -> str:
    checkpoint = (f"saved checkpoint {saved}" if saved is not None
                  else "nothing trained since the start, nothing to save")
    return f"stopped by {self.cause} at step {step}: {checkpoint}; rerun the same command to resume"

  def exit(self) -> SystemExit:
    return SystemExit(self.status)


# Codes all-gathered between processes; the highest wins.
_REQUESTS = {
    1: StopRequest("the time limit (config.time_limit_seconds)", 0),
    2: StopRequest("SIGINT", 130),
    3: StopRequest("SIGTERM", 0),
}
_SIGNAL_CODES = {signal.SIGINT: 2, signal.SIGTERM: 3}


class StopRequests:
  """Signal handlers and the time limit of a run (see the module docstring)."""

  def __init__(self, time_limit_seconds: float = 0.0, agree_every_steps: int = 1,
               on_abort: Sequence[Callable[[], Any]] = ()):
    self._time_limit = time_limit_seconds
    self._agree_every = max(int(agree_every_steps), 1)
    self._on_abort = list(on_abort)
    self._received: int | None = None
    self._start = time.monotonic()
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "StopRequests":
    self._start = time.monotonic()
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN:
          continue
        self._previous[sig] = previous
        signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, signal.SIG_DFL if previous is None else previous)
    self._previous = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self._received is None:
      self._received = signum  # the loop notices at the top of its next step
      return
    name = signal.Signals(signum).name
    # os.write, not print: a handler may interrupt a print to the same stream.
    os.write(2, f"error: second {name}: aborting at once, without saving\n".encode())
    for callback in self._on_abort:
      callback()
    os._exit(128 + signum)

  def _local_code(self) -> int:
    if self._received is not None:
      return _SIGNAL_CODES[self._received]
    if self._time_limit and time.monotonic() - self._start >= self._time_limit:
      return 1
    return 0

  def check(self, step: int) -> StopRequest | None:
    """Whether to stop before training step `step + 1`; every process gets the same answer
    (multi-process: agreed every `agree_every_steps` steps, None in between)."""
    code = self._local_code()
    if jax.process_count() > 1:
      if step % self._agree_every:
        return None
      code = int(np.max(multihost_utils.process_allgather(np.int32(code))))
    return _REQUESTS.get(code)
