"""The language-model comparison's figures: bits per byte, the markdown table, the plot.

Every model is scored by its summed negative log-likelihood (nats) of the same validation
tokens, so

  perplexity per token = exp(nll / tokens)
  bits per byte        = nll / (ln 2 · bytes)   (bytes: UTF-8 bytes of the split's original text)
                       = log2(perplexity) · tokens / bytes

Bits per byte do not depend on the tokenizer: they compare models over different vocabularies.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def perplexity(nll: float, tokens: int) -> float:
  """exp(mean nll per token) from the summed nll (nats) of `tokens` tokens."""
  return math.exp(nll / tokens)


def bits_per_byte(nll: float, num_bytes: int) -> float:
  """Summed nll in nats of a text -> bits per UTF-8 byte of that text."""
  return nll / (math.log(2) * num_bytes)


def _count(n: float | None, unit: str = "") -> str:
  """1234567 -> '1.23M'; None -> '–'."""
  if n is None:
    return "–"
  for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{suffix}{unit}"
  return f"{n:.0f}{unit}"


def _minutes(seconds: float | None) -> str:
  return "–" if seconds is None else f"{seconds / 60:.1f} min"


def markdown_table(rows: Sequence[Mapping[str, Any]], validation: Mapping[str, int]) -> str:
  """The comparison table, one row per model, and the facts shared by every row.

  Args:
    rows: per model: 'model', 'params' (n-grams: stored n-gram counts), 'train_tokens',
      'train_flops' (None: not a network), 'wall_seconds' (None: unknown), 'nll' (summed
      nats over the validation split), 'tokens' (its token count); n-grams: 'seen' (the
      fraction of validation tokens whose whole n-gram occurs in the training tokens).
    validation: {'tokens', 'bytes'} of the whole validation split.

  Returns:
    Markdown text: the table, then a line naming the lowest perplexity.
  """
  lines = ["| model | params | training tokens | train FLOPs | wall time | "
           "val perplexity / token | bits per byte |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['model']} | {_count(row['params'])} | {row['train_tokens']:,} | "
                 f"{_count(row['train_flops'])} | {_minutes(row['wall_seconds'])} | "
                 f"{perplexity(row['nll'], row['tokens']):.2f} | "
                 f"{bits_per_byte(row['nll'], validation['bytes']):.3f} |")
  best = min(rows, key=lambda row: row["nll"] / row["tokens"])
  lines += ["", f"Whole validation split: {validation['tokens']:,} tokens, "
            f"{validation['bytes']:,} bytes of text. Lowest perplexity: {best['model']}."]
  seen = [f"{row['model']} {row['seen']:.0%}" for row in rows if "seen" in row]
  if seen:
    lines.append("Validation tokens whose whole n-gram occurs in the training tokens: "
                 + ", ".join(seen) + ".")
  return "\n".join(lines) + "\n"


def plot(curves: Mapping[str, Sequence[tuple[int, float]]], levels: Mapping[str, float],
         path: str) -> str:
  """Validation loss against training tokens: a line per network, a horizontal line per n-gram.

  Args:
    curves: network name -> [(training tokens seen, validation nll per token)].
    levels: n-gram name -> its validation nll per token.
    path: the .png written.

  Returns:
    `path`.
  """
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for name, points in curves.items():
    ax.plot(*zip(*sorted(points)), marker="o", markersize=3, label=name)
  for i, (name, level) in enumerate(levels.items()):
    ax.axhline(level, color=f"C{len(curves) + i}", linestyle="--", linewidth=1, label=name)
  losses = [loss for points in curves.values() for _, loss in points[1:]] + list(levels.values())
  if losses:  # the untrained point (ln vocab) would flatten everything else
    ax.set_ylim(min(losses) * 0.95, max(losses) * 1.05)
  ax.set_xlabel("training tokens")
  ax.set_ylabel("validation loss (nats / token)")
  ax.set_title("whole validation split")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
