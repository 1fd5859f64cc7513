"""Bits per byte and perplexity from one summed nll (a hand example), the table, the plot."""

import math
import os

import pytest

from transformer.training import comparison_report


def test_bits_per_byte_and_perplexity_by_hand():
  # "abcd" (4 bytes) in 3 tokens predicted with probabilities 1/2, 1/4, 1/8:
  # nll = ln 2 + 2 ln 2 + 3 ln 2 = 6 ln 2 nats = 6 bits over 4 bytes -> 1.5 bits per byte;
  # perplexity per token = 2 ** (6 bits / 3 tokens) = 4.
  nll = -sum(math.log(p) for p in (1 / 2, 1 / 4, 1 / 8))
  assert comparison_report.bits_per_byte(nll, num_bytes=len(b"abcd")) == pytest.approx(1.5)
  assert comparison_report.perplexity(nll, tokens=3) == pytest.approx(4.0)
  # The two agree: bits per byte = log2(perplexity) * tokens / bytes.
  assert math.log2(comparison_report.perplexity(nll, 3)) * 3 / 4 == pytest.approx(1.5)
  # Multi-byte characters count as their UTF-8 bytes: "é€" is 2 + 3 bytes.
  assert comparison_report.bits_per_byte(5 * math.log(2), len("é€".encode())) == pytest.approx(1)


def test_markdown_table_rows_and_lowest():
  rows = [dict(model="lstm", params=390_000, train_tokens=819_200, train_flops=2.5e12,
               wall_seconds=90.0, nll=4.0 * 1000, tokens=1000),
          dict(model="Kneser-Ney 3-gram", params=12_345, train_tokens=819_200, train_flops=None,
               wall_seconds=None, nll=3.0 * 1000, tokens=1000, seen=0.625)]
  table = comparison_report.markdown_table(rows, {"tokens": 1000, "bytes": 2000})
  lines = table.splitlines()
  assert lines[2] == (f"| lstm | 390k | 819,200 | 2.5T | 1.5 min | {math.exp(4):.2f} | "
                      f"{4000 / (2000 * math.log(2)):.3f} |")
  assert lines[3].startswith("| Kneser-Ney 3-gram | 12.3k | 819,200 | – | – | 20.09 |")
  assert "Lowest perplexity: Kneser-Ney 3-gram." in table
  assert "occurs in the training tokens: Kneser-Ney 3-gram 62%." in table


def test_plot_writes_a_png(tmp_path):
  path = comparison_report.plot({"lstm": [(0, 6.9), (100, 5.0), (200, 4.5)]},
                                {"Kneser-Ney 2-gram": 4.8}, str(tmp_path / "c.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(path) > 1000
