"""Text metrics of seq2seq outputs: corpus sacreBLEU, chrF and exact match."""

from collections.abc import Sequence

import sacrebleu


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """Corpus BLEU with sacreBLEU's defaults (13a tokenization, one reference per hypothesis).

  Returns:
    (score in [0, 100], the sacreBLEU signature to report with it, e.g.
     'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0').
  """
  _check_lengths(hypotheses, references)
  metric = sacrebleu.BLEU()
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return float(score.score), str(metric.get_signature())


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """Corpus chrF with sacreBLEU's defaults (character 6-grams, β = 2, no word n-grams).

  Returns:
    (score in [0, 100], its sacreBLEU signature, e.g. 'nrefs:1|case:mixed|eff:yes|nc:6|nw:0|...').
  """
  _check_lengths(hypotheses, references)
  metric = sacrebleu.CHRF()
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return float(score.score), str(metric.get_signature())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Fraction of hypotheses equal to their reference after stripping surrounding whitespace."""
  _check_lengths(hypotheses, references)
  if not hypotheses:
    return 0.0
  return sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
