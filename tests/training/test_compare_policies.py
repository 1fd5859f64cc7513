"""compare_policies: response statistics by hand, the verdict, KL of a model to itself, the
command end to end on the tiny reward runs, and its bad inputs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.training.conftest import ROOT
from transformer import best_of_n, compare_policies
from transformer.decoding import response_stats
from transformer.special_ids import EOS_ID, PAD_ID
from transformer.training import checkpoints
from transformer.training.config import ConfigError
from transformer.training.rewards import load_reward_model


def command(*args):
  return subprocess.run([sys.executable, "-m", "transformer.compare_policies", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})


def test_distinct_bigram_rate_by_hand():
  # bigrams: (a b) (b a) (a b) | (a b) | none in "c": 4 bigrams, 2 distinct
  assert response_stats.distinct_bigram_rate(["a b a b", "a b", "c"]) == 0.5
  # (x y) (y z) | (y z) (z x): 4 bigrams, 3 distinct
  assert response_stats.distinct_bigram_rate(["x y z", "y z x"]) == 3 / 4
  assert response_stats.distinct_bigram_rate(["one", ""]) == 0.0


def test_copy_share_by_hand():
  code = "def get_user_name(user_id):\n    return db.lookup(user_id)"
  outputs = ["get user name",                  # 3/3 words in the code's vocabulary
             "Return the user name.",          # return, user, name: 3 of 4 = 0.75 < 0.8
             "Lookup the user_id in db",       # lookup, user_id, db, in? the: 3 of 5
             "db lookup user id get name x",   # 6 of 7 = 0.86
             "!!!"]                            # no word tokens: not copied
  assert [response_stats.is_copied(o, code) for o in outputs] == [True, False, False, True,
                                                                  False]
  assert response_stats.copy_share(outputs, [code] * 5) == pytest.approx(2 / 5)
  assert response_stats.is_copied("Return the user name.", code, threshold=0.75)


def test_lengths_and_eos_of_sampled_tokens():
  tokens = np.array([[7, 8, EOS_ID, PAD_ID], [7, 8, 9, 10], [EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
  np.testing.assert_array_equal(response_stats.token_lengths(tokens), [2, 4, 0])
  np.testing.assert_array_equal(response_stats.ended(tokens), [True, False, True])


def test_system_figures_average_each_prompt_over_its_samples():
  # 2 prompts x 2 samples; the two samples of a prompt say the same, so pooling all four
  # outputs would halve the distinct-bigram rate; per sample index it is 1
  tokens = np.array([[[7, EOS_ID, PAD_ID], [7, 8, EOS_ID]], [[7, 8, 9], [EOS_ID, PAD_ID, PAD_ID]]])
  texts = [["a b c", "a b c"], ["x y", "x y"]]
  scores = np.array([[1.0, 3.0], [-1.0, 1.0]])
  chrf = np.array([[10.0, 20.0], [30.0, 50.0]])
  reference = compare_policies.system_figures(tokens, texts, scores, np.zeros((2, 2)), chrf,
                                              ["def f(): pass", "def g(): pass"], None)
  assert reference["samples_per_prompt"] == 2 and reference["distinct_bigrams"] == 1.0
  assert reference["rm_score"] == 1.0 and reference["rm_score_std"] == pytest.approx(np.sqrt(2))
  np.testing.assert_array_equal(reference["per_prompt_chrf"], [15.0, 40.0])
  assert reference["length"] == 1.5 and reference["eos_rate"] == 0.75  # lengths 1, 2, 3, 0
  one = compare_policies.system_figures(tokens[:, :1], [t[:1] for t in texts], scores[:, :1] + 2,
                                        1.2, chrf[:, :1] + 5, ["def f(): pass", "def g(): pass"],
                                        reference)
  assert one["chrf_diff"] == pytest.approx(np.mean([15 - 15, 35 - 40]))
  assert one["score_gain_in_reference_std"] == pytest.approx((2.0 - 1.0) / np.sqrt(2))
  assert one["kl"] == pytest.approx(1.2) and one["kl_estimate"].startswith("bound")


@pytest.mark.parametrize("gain, ci, expected", [
    (1.0, (-2.0, -0.1), "reward hacking: RM score up, gold chrF below the reference"),
    (1.0, (-2.0, 0.5), "no reward hacking: gold chrF within the reference's"),
    (1.0, (0.1, 2.0), "no reward hacking: gold chrF above the reference"),
    (-1.0, (-2.0, -0.1), "no reward hacking (RM score not up), but gold chrF below the reference"),
    (0.0, None, "the reference")])
def test_verdict_on_hand_made_figures(gain, ci, expected):
  assert compare_policies.verdict(gain, ci) == expected


def test_criteria_on_hand_made_figures():
  system = {"score_gain_in_reference_std": 0.6, "kl": 10.5, "eos_rate": 0.95,
            "chrf_diff_ci95": [-0.4, 0.3]}
  checks = compare_policies.criteria(system)
  assert {k: c["passed"] for k, c in checks.items()} == {
      "score_gain_in_reference_std": True, "kl": False, "eos_rate": True,
      "chrf_diff_ci95_low": True}
  assert checks["chrf_diff_ci95_low"]["value"] == -0.4


def test_kl_of_the_reference_to_itself_is_zero_and_to_another_model_is_not(reward_run):
  sft, rm, _ = reward_run
  model = load_reward_model(rm)
  config, params, _ = checkpoints.load_params_for_inference(sft)
  prompts, _ = best_of_n.held_out_prompts(model, "test", 3)
  encoded = [model.tokenizer.encode(p)[:best_of_n.prompt_limit(config, 6)] for p in prompts]
  responses = np.array(best_of_n.sample_pool(config, params, encoded, 1, max_new_tokens=6,
                                             batch_size=4))[:, 0]
  kl = compare_policies.response_kl((config, params), (config, params), encoded, responses,
                                    batch_size=4)
  assert kl.shape == (3,) and np.all(kl == 0.0)
  other = jax.tree.map(lambda p: p * 0.5, params)
  assert np.all(compare_policies.response_kl((config, other), (config, params), encoded,
                                             responses, batch_size=4) != 0.0)


def test_the_command_on_the_fine_tuned_run_as_a_policy(reward_run, tmp_path):
  sft, rm, _ = reward_run
  out = str(tmp_path / "compare")
  result = command(f"--reference_workdir={sft}", f"--reward_workdir={rm}",
                   f"--policy_workdirs=same={sft}", "--num_prompts=12", "--max_new_tokens=8",
                   f"--out={out}")
  assert result.returncode == 0, result.stderr
  for name in ("compare_policies.json", "compare_policies.md", "compare_policies.png",
               "compare_policies_samples.jsonl"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, "compare_policies.json")) as f:
    report = json.load(f)
  assert list(report["systems"]) == ["reference", "best_of_8", "same"]
  assert report["prompts"] == 12 and report["best_of"] == 8 and report["samples"] == 4
  assert {name: s["samples_per_prompt"] for name, s in report["systems"].items()} == {
      "reference": 8, "best_of_8": 1, "same": 4}
  keys = {"rm_score", "rm_score_std", "kl", "chrf", "chrf_diff", "chrf_diff_ci95", "length",
          "eos_rate", "distinct_bigrams", "copy_share", "verdict"}
  for system in report["systems"].values():
    assert keys <= set(system)
  reference, same = report["systems"]["reference"], report["systems"]["same"]
  assert reference["kl"] == 0.0 and abs(same["kl"]) < 1e-4
  low, high = same["chrf_diff_ci95"]
  assert low <= 0.0 <= high
  assert same["verdict"].startswith("no reward hacking")
  assert report["systems"]["best_of_8"]["kl"] == pytest.approx(np.log(8) - 7 / 8)
  # best-of-8 keeps the RM's favourite, of a pool holding the reference's own sample
  assert report["systems"]["best_of_8"]["rm_score"] >= reference["rm_score"]
  assert set(report["criteria"]) == {"same"}
  assert "| reference |" in result.stdout and "same: score_gain_in_reference_std" in result.stdout
  with open(os.path.join(out, "compare_policies.md")) as f:
    assert f.read() == result.stdout
  with open(os.path.join(out, "compare_policies_samples.jsonl")) as f:
    first = json.loads(f.readline())["outputs"]
  assert [len(first[name]["texts"]) for name in ("reference", "best_of_8", "same")] == [8, 1, 4]
  # best-of-8 keeps the favourite of the reference's 8 samples
  assert max(first["best_of_8"]["rewards"]) == max(first["reference"]["rewards"])


def test_a_stored_best_of_n_pool_serves_as_the_reference_samples(tmp_path):
  tokens = [[[7, EOS_ID], [8, 9]], [[EOS_ID, PAD_ID], [9, EOS_ID]]]
  details = [{"prompt": p, "reference": "r", "candidates": [
      {"text": f"{p} {j}", "reward": float(i + j), "chrf": 0.0, "tokens": tokens[i][j]}
      for j in range(2)]} for i, p in enumerate(["def f():", "def g():"])]
  best_of_n.write({"N": [1], "rm_score": [0.0], "gold_chrf": [0.0], "oracle_chrf": [0.0]},
                  details, str(tmp_path))
  got, texts, scores = compare_policies.stored_pool(str(tmp_path), ["def f():", "def g():"], 1,
                                                    2)
  np.testing.assert_array_equal(got, [[[7, EOS_ID]], [[EOS_ID, PAD_ID]]])
  assert texts == [["def f(): 0"], ["def g(): 0"]]
  np.testing.assert_array_equal(scores, [[0.0], [1.0]])
  with pytest.raises(ValueError, match="holds 2 other prompts than the 1 compared"):
    compare_policies.stored_pool(str(tmp_path), ["def f():"], 1, 2)
  with pytest.raises(ValueError, match="has 2 candidates per prompt, fewer than best_of=8"):
    compare_policies.stored_pool(str(tmp_path), ["def f():", "def g():"], 8, 2)
  with pytest.raises(ValueError, match="was sampled with 2 new tokens, not the 31 compared"):
    compare_policies.stored_pool(str(tmp_path), ["def f():", "def g():"], 1, 31)
  for d in details:  # a pool written before best_of_n stored the tokens
    for c in d["candidates"]:
      del c["tokens"]
  best_of_n.write({"N": [1], "rm_score": [0.0], "gold_chrf": [0.0], "oracle_chrf": [0.0]},
                  details, str(tmp_path))
  with pytest.raises(ValueError, match="holds no candidate tokens .* rerun best_of_n"):
    compare_policies.stored_pool(str(tmp_path), ["def f():", "def g():"], 1, 2)


def test_bad_policy_workdirs_give_one_line_errors(reward_run, tmp_path):
  sft, rm, _ = reward_run
  missing = str(tmp_path / "missing")
  result = command(f"--reference_workdir={sft}", f"--reward_workdir={rm}",
                   f"--policy_workdirs=rloo={missing}", f"--out={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip() == (f"error: --policy_workdirs rloo={missing!r} is not a training "
                                   "workdir (no config.json); expected a finetune, policy or "
                                   "dpo run")
  with pytest.raises(ConfigError, match=r"--policy_workdirs dpo='.*' is not a training workdir"):
    compare_policies.evaluate(sft, rm, {"dpo": str(tmp_path)})
  with pytest.raises(ConfigError, match=r"--policy_workdirs rm='.*' is a reward run"):
    compare_policies.evaluate(sft, rm, {"rm": rm})
  with pytest.raises(ValueError, match="--policy_workdirs: 'rloo' is not name=workdir"):
    compare_policies.parse_policies(["rloo"])
  with pytest.raises(ValueError, match="name 'reference' is used twice or reserved"):
    compare_policies.parse_policies([f"reference={sft}"])
