"""Where metrics go: TensorBoard event files, `metrics.jsonl`, the progress line, and a PNG plot.

Every record is (step, split, {name: float}); splits are 'train' and 'eval'. The JSONL file
holds the whole history of a workdir, one record per (step, split): a run resumed from step s
first drops the records after s (steps it will train again; `MetricWriter(resume_step=s)`),
and TensorBoard is told to purge them too. A torn last line (a run killed mid-write) is
ignored with a warning.
"""

import json
import math
import os
from collections.abc import Mapping

import matplotlib
from absl import logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import tensorboardX  # noqa: E402

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PLOT_FILE = "curves.png"


class MetricWriter:
  """Writes scalars to `workdir/tensorboard` and `workdir/metrics.jsonl`.

  resume_step: the step the run starts from; earlier records after it (and torn lines) are
  dropped first, so each (step, split) is written once. A run from scratch (0) starts over.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    os.makedirs(workdir, exist_ok=True)
    keep_records_until(workdir, resume_step if resume_step > 0 else -1)
    self._tensorboard = tensorboardX.SummaryWriter(
        os.path.join(workdir, TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None)
    self._jsonl = open(os.path.join(workdir, JSONL_FILE), "a")

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._jsonl.flush()
    self._tensorboard.flush()

  def close(self) -> None:
    self._tensorboard.close()
    self._jsonl.close()


def format_duration(seconds: float) -> str:
  """'1h02m', '3m05s' or '42s'."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return (f"{hours}h{minutes:02d}m" if hours
          else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"))


def progress_line(step: int, num_steps: int, loss: float, learning_rate: float,
                  tokens_per_second: float, mfu: float, eta_seconds: float,
                  grad_norm: float | None = None,
                  extra: Mapping[str, float] | None = None) -> str:
  """`step 120/600 | loss 3.2101 | grad norm 0.412 | lr 1.20e-03 | 5,412 tok/s | MFU 31.2% |
  ETA 2m10s` (one line; the gradient's global norm before clipping, averaged since the last
  line; MFU in percent); `extra` metrics follow the loss (`| kl 2.5921`)."""
  shown = "".join(f" | {name} {value:.4f}" for name, value in (extra or {}).items())
  norm = "" if grad_norm is None else f" | grad norm {grad_norm:.3f}"
  return (f"step {step}/{num_steps} | loss {loss:.4f}{shown}{norm} | lr {learning_rate:.2e} | "
          f"{tokens_per_second:,.0f} tok/s | MFU {100 * mfu:.1f}% | "
          f"ETA {format_duration(eta_seconds)}")


def read_jsonl(workdir: str) -> list[dict]:
  """Every record of `workdir/metrics.jsonl` (empty if there is none); a line that is not a
  JSON record (the torn last line of a killed run) is skipped with a warning."""
  path = os.path.join(workdir, JSONL_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if not isinstance(record, dict) or "step" not in record or "split" not in record:
        logging.warning("%s:%d: ignoring a line that is not a whole metrics record "
                        "(a run stopped while writing it?)", path, number)
        continue
      records.append(record)
  return records


def keep_records_until(workdir: str, step: int) -> None:
  """Rewrites metrics.jsonl (atomically) with the records of steps <= `step` only, the last
  one of each (step, split), and no torn lines. Nothing to do without a file."""
  path = os.path.join(workdir, JSONL_FILE)
  if not os.path.exists(path):
    return
  kept = {}
  for record in read_jsonl(workdir):
    if record["step"] <= step:
      kept.pop((record["step"], record["split"]), None)  # the last one wins, in file order
      kept[(record["step"], record["split"])] = record
  with open(path + ".tmp", "w") as f:
    f.writelines(json.dumps(record) + "\n" for record in kept.values())
  os.replace(path + ".tmp", path)


def plot_curves(workdir: str,
                names: tuple[str, ...] = ("loss", "accuracy", "learning_rate")) -> str:
  """Plots train and eval curves of `names` from metrics.jsonl to `workdir/curves.png`; returns
  the path."""
  records = read_jsonl(workdir)
  names = tuple(n for n in names if any(n in r for r in records))
  fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 3.6),
                           squeeze=False)
  for ax, name in zip(axes[0], names):
    for split in ("train", "eval"):
      points = sorted({r["step"]: r[name] for r in records
                       if r["split"] == split and name in r and math.isfinite(r[name])}.items())
      if points:
        ax.plot(*zip(*points), label=split, marker="o" if split == "eval" else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, PLOT_FILE)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
