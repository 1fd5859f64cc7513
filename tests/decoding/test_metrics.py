"""sacreBLEU, chrF and exact match."""

import pytest
import sacrebleu

from transformer.decoding.metrics import bleu, chrf, exact_match


def test_bleu_and_exact_match():
  score, signature = bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
  assert score == pytest.approx(100.0) and "tok:13a" in signature and "nrefs:1" in signature
  score, _ = bleu(["the cat sat on the mat", "a dog"], ["the cat sat on a mat", "a dog ran"])
  expected = sacrebleu.corpus_bleu(["the cat sat on the mat", "a dog"],
                                   [["the cat sat on a mat", "a dog ran"]]).score
  assert score == pytest.approx(expected) and 0 < score < 100
  assert exact_match([" a b", "c", "d"], ["a b ", "c", "e"]) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    exact_match(["a", "b"], ["a"])


def test_chrf():
  score, signature = chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
  assert score == pytest.approx(100.0) and "nc:6" in signature and "nw:0" in signature
  hypotheses = ["the cat sat on the mat", "a dog"]
  references = ["the cat sat on a mat", "a dog ran"]
  expected = sacrebleu.corpus_chrf(hypotheses, [references]).score
  assert chrf(hypotheses, references)[0] == pytest.approx(expected) and 0 < expected < 100
  with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
    chrf(["a"], ["a", "b"])
