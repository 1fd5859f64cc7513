"""Where metrics go: TensorBoard event files, `metrics.jsonl`, the progress line, and a PNG plot.

Every record is (step, split, {name: float}); splits are 'train' and 'eval'. The JSONL file
is appended to on resume, so it holds the whole history of a workdir.
"""

import json
import math
import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import tensorboardX  # noqa: E402

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PLOT_FILE = "curves.png"


class MetricWriter:
  """Writes scalars to `workdir/tensorboard` and `workdir/metrics.jsonl`."""

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
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
                  tokens_per_second: float, mfu: float, eta_seconds: float) -> str:
  """`step 120/600 | loss 3.2101 | lr 1.20e-03 | 5,412 tok/s | MFU 31.2% | ETA 2m10s`."""
  return (f"step {step}/{num_steps} | loss {loss:.4f} | lr {learning_rate:.2e} | "
          f"{tokens_per_second:,.0f} tok/s | MFU {100 * mfu:.1f}% | "
          f"ETA {format_duration(eta_seconds)}")


def read_jsonl(workdir: str) -> list[dict]:
  """Every record of `workdir/metrics.jsonl` (empty if there is none)."""
  path = os.path.join(workdir, JSONL_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
