"""The reward stage: its loss by hand, K-way batching, normalisation, init_from, bad inputs."""

import itertools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.training.conftest import ROOT
from transformer import best_of_n, evaluate_reward
from transformer.data import tasks
from transformer.models.config import ModelConfig
from transformer.models.reward import reward_model
from transformer.special_ids import EOS_ID
from transformer.training.config import ConfigError
from transformer.training.rewards import load_reward_model
from transformer.training.stages import preference_loss, reward_model_loss, summarize_rewards
from transformer.training.state import init_params


def log_sigmoid(x):
  return -math.log1p(math.exp(-x))


@pytest.mark.parametrize("margin, center", [(None, 0.0), (0.5, 0.0), (None, 0.1), (0.5, 0.1)])
def test_loss_against_a_hand_computation(margin, center):
  scores = jnp.array([[2.0, 0.5], [-1.0, 1.0]])
  m = 0.0 if margin is None else margin
  expected = [-log_sigmoid(2.0 - 0.5 - m) + center * 2.5 ** 2,
              -log_sigmoid(-1.0 - 1.0 - m) + center * 0.0 ** 2]
  objective, sums = preference_loss(
      scores, jnp.ones((2, 2), bool), margin=None if margin is None else jnp.full((2,), margin),
      center_coef=center)
  np.testing.assert_allclose(objective, sum(expected), rtol=1e-6)
  summary = summarize_rewards(jax.device_get(sums))
  np.testing.assert_allclose(summary["loss"], sum(expected) / 2, rtol=1e-6)
  assert summary["accuracy"] == 0.5 and summary["pairs"] == 2
  np.testing.assert_allclose(summary["margin"], (1.5 - 2.0) / 2, rtol=1e-6)
  np.testing.assert_allclose([summary["chosen_mean"], summary["chosen_std"]], [0.5, 1.5])
  np.testing.assert_allclose([summary["rejected_mean"], summary["rejected_std"]], [0.75, 0.25])


def test_ties_count_as_wrong_and_filler_rows_count_nothing():
  scores = jnp.array([[1.0, 1.0], [0.0, 0.0]])
  valid = jnp.array([[True, True], [False, False]])  # row 2 pads the last batch
  objective, sums = preference_loss(scores, valid)
  assert float(sums["pairs"]) == 1 and float(sums["correct"]) == 0 and float(sums["prompts"]) == 1
  np.testing.assert_allclose(objective, math.log(2), rtol=1e-6)
  assert float(sums["chosen_n"]) == 1 and float(sums["rejected_n"]) == 1


def _model_and_params():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                    num_encoder_layers=0, num_decoder_layers=1, max_len=16, dropout_rate=0.0)
  model = reward_model(cfg.eval())
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p.shape),
                        init_params(model, jax.random.PRNGKey(0)))
  return model, params


def _row(prompt, response, length=10):
  tokens = np.zeros(length, np.int32)
  weights = np.zeros(length, np.float32)
  seq = prompt + response + [EOS_ID]
  tokens[:len(seq)] = seq
  weights[len(prompt):len(seq)] = 1.0
  return tokens, weights


def test_k_way_batching_equals_the_same_pairs_listed_one_by_one():
  model, params = _model_and_params()
  prompt, responses = [5, 6], [[7, 8, 9], [10], [11, 12]]
  rows = [_row(prompt, r) for r in responses]
  k_way = {f"response_{k}": jnp.asarray(rows[k][0])[None] for k in range(3)}
  k_way.update({f"response_{k}_weights": jnp.asarray(rows[k][1])[None] for k in range(3)})
  pairs = list(itertools.combinations(range(3), 2))
  one_by_one = {"response_0": jnp.stack([rows[i][0] for i, _ in pairs]),
                "response_1": jnp.stack([rows[j][0] for _, j in pairs]),
                "response_0_weights": jnp.stack([rows[i][1] for i, _ in pairs]),
                "response_1_weights": jnp.stack([rows[j][1] for _, j in pairs])}
  loss = reward_model_loss(model, pairing="all")
  key = jax.random.PRNGKey(0)
  (k_obj, k_sums), k_grad = jax.value_and_grad(loss, has_aux=True)(params, k_way, key, {})
  (p_obj, p_sums), p_grad = jax.value_and_grad(loss, has_aux=True)(params, one_by_one, key, {})
  # one element averages its 3 pairs; listed one by one they are 3 elements of 1 pair each
  np.testing.assert_allclose(k_obj * 3, p_obj, rtol=1e-5)
  for name in ("pairs", "correct", "margin"):
    np.testing.assert_allclose(k_sums[name], p_sums[name], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(3 * a, b, rtol=1e-4, atol=1e-6),
               k_grad, p_grad)


def test_best_of_n_weights_match_every_subset():
  rng = np.random.default_rng(0)
  proxy, gold = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  for n in range(1, 7):
    np.testing.assert_allclose(best_of_n.best_of_n_weights(6, n).sum(), 1.0)
    expected_proxy, expected_gold = [], []
    for p, g in zip(proxy, gold, strict=True):
      subsets = list(itertools.combinations(range(6), n))
      best = [max(s, key=lambda i, p=p: p[i]) for s in subsets]
      expected_proxy.append(np.mean([p[i] for i in best]))
      expected_gold.append(np.mean([g[i] for i in best]))
    got_proxy, got_gold = best_of_n.expected_best_of_n(proxy, gold, n)
    np.testing.assert_allclose(got_proxy, expected_proxy, rtol=1e-9)
    np.testing.assert_allclose(got_gold, expected_gold, rtol=1e-9)


def test_reward_run_from_a_fine_tuned_one_restores_all_but_the_head(reward_run):
  sft, rm, log = reward_run
  params = load_reward_model(rm).params
  total = len(jax.tree.leaves(params))
  assert f"initialising from init_from={sft}" in log
  assert f"restored {total - 2} params, initialised fresh 2" in log
  assert "fresh: reward_head/bias (not in checkpoint)" in log
  assert "fresh: reward_head/kernel (not in checkpoint)" in log


def test_bias_makes_the_train_splits_chosen_mean_zero(reward_run):
  _, rm, log = reward_run
  model = load_reward_model(rm)
  assert model.bias != 0.0 and "reward bias" in log
  mean, count = evaluate_reward.chosen_mean(model, "train")
  assert count > 0 and abs(mean) < 1e-4


def test_evaluation_counts_real_pairs_only(reward_run):
  sft, rm, _ = reward_run
  result = evaluate_reward.evaluate(rm, sft, "test", batch_size=64, train_mean=False)
  k = load_reward_model(rm).config.data.num_responses
  assert result["examples"] + result["dropped"] == result["records"]
  assert result["pairs"] <= result["examples"] * (k - 1)  # filler rows of the batch add none
  assert 0 <= result["rm_accuracy"] <= 1 and 0 <= result["likelihood_accuracy"] <= 1


def test_cut_responses_scores_the_first_budget_tokens(reward_run):
  _, rm, _ = reward_run
  model = load_reward_model(rm)
  long = " ".join(f"w{i}" for i in range(200))
  ids = model.tokenizer.encode(long)[:model.response_budget()]
  cut = model.score_texts(["def f(): pass"], [long], cut_responses=True)
  # The reference: the same prompt with the response's first budget tokens, scored as ids.
  data = model.config.data.copy_and_resolve_references()
  data.num_responses, data.truncate_inputs = 1, True
  example = model.task.examples((model.tokenizer.encode("def f(): pass"), ids), None, data)[0]
  row = tasks.pad_example(example, model.task.lengths(data), with_segmentation=False)
  expected = model.score_batch({k: v[None] for k, v in row.items()})[0][0, 0]
  np.testing.assert_allclose(cut, [expected], rtol=1e-5, atol=1e-5)


def test_bad_reward_inputs_give_one_line_errors(reward_run):
  sft, rm, _ = reward_run
  with pytest.raises(ConfigError, match="num_prompts=-1: expected 0"):
    best_of_n.evaluate(sft, rm, num_prompts=-1)
  with pytest.raises(ConfigError, match="is not a reward model: its run is stage 'finetune'"):
    load_reward_model(sft)
  with pytest.raises(ValueError, match=r"response 0 has \d+ tokens: with its EOS it does not fit"):
    load_reward_model(rm).score_texts(["def f(): pass"], ["word " * 200])

  def generate(*args):
    return subprocess.run([sys.executable, "-m", "transformer.generate", f"--workdir={sft}",
                           "--prompt=def f(): pass", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
                                                       "PATH": "/usr/bin:/bin"})
  for args, message in [((f"--reward_workdir={sft}",), "is not a reward model"),
                        ((f"--reward_workdir={rm}", "--num_samples=0"), "--num_samples must be"),
                        ((f"--reward_workdir={rm}", "--max_new_tokens=200"),
                         "no room for the EOS in the reward model's response budget")]:
    result = generate(*args)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
  result = subprocess.run([sys.executable, "-m", "transformer.best_of_n", f"--policy_workdir={sft}",
                           f"--reward_workdir={rm}", f"--out={rm}/config.json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().endswith(f"--out='{rm}/config.json' is a file, not a directory")


def test_best_of_n_generation_prints_the_best_and_every_candidate(reward_run):
  sft, rm, _ = reward_run
  result = subprocess.run(
      [sys.executable, "-m", "transformer.generate", f"--workdir={sft}", f"--reward_workdir={rm}",
       "--prompt=def add(a, b):\n    return a + b", "--num_samples=3", "--show_candidates",
       "--max_new_tokens=6"], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 4
  scores = [float(line.split("\t")[0]) for line in lines[1:]]
  assert scores == sorted(scores, reverse=True)
  assert lines[0] == lines[1].split("\t", 1)[1]
