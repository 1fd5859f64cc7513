"""The policy stage end to end: from a tiny fine-tuned run (policy and frozen reference) and a
tiny reward run (frozen reward model), both algorithms; metrics logged and finite, the KL 0 at
step 0; the rollout's prompts, rewards and advantages against hand computations; bad inputs
as one-line errors before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.training.conftest import load_experiment
from transformer.models.config import ModelConfig
from transformer.models.reward import reward_model
from transformer.special_ids import EOS_ID, PAD_ID
from transformer.training import checkpoints, writer
from transformer.training.config import ConfigError, validate
from transformer.training.loop import run
from transformer.training.policy import batch_prompts, reward_scores
from transformer.training.policy_objectives import clipped_surrogate
from transformer.training.state import init_params

METRICS = ("loss", "score", "kl", "reward", "eos_rate", "response_length", "entropy")


def policy_config(data_dir: str, sft: str, rm: str, **policy):
  config = load_experiment("policy", "tiny")
  config.data.data_dir = data_dir
  config.init_from = sft
  config.policy.reward_workdir = rm
  config.policy.update(**policy)
  return config


@pytest.fixture(scope="module", params=["rloo", "grpo"])
def policy_run(request, tmp_path_factory, data_dir, reward_run):
  """(sft, rm, policy workdir, its log) of a 4-step tiny policy run of each algorithm."""
  sft, rm, _ = reward_run
  workdir = str(tmp_path_factory.mktemp("policy") / request.param)
  lines = []
  run(policy_config(data_dir, sft, rm, algorithm=request.param,
                    updates_per_batch=2 if request.param == "grpo" else 1),
      workdir, print_fn=lines.append)
  return sft, rm, workdir, "\n".join(lines)


def test_metrics_are_logged_finite_and_the_kl_starts_at_zero(policy_run):
  _, _, workdir, log = policy_run
  records = writer.read_jsonl(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  for record in records:
    for name in METRICS:
      assert np.isfinite(record[name]), (name, record)
    assert 0.0 <= record["eos_rate"] <= 1.0 and 0 < record["response_length"] <= 8
  # Step 1's samples come from the starting params, which are the reference.
  assert abs(train[0]["kl"]) < 1e-4, train[0]
  first_eval = next(r for r in records if r["split"] == "eval" and r["step"] == 0)
  assert abs(first_eval["kl"]) < 1e-4, first_eval
  assert "frozen reference: a copy of these starting params" in log
  step_1 = next(line for line in log.splitlines() if line.startswith("step 1/4 "))
  for name in ("score", "kl", "reward", "eos_rate", "response_length", "entropy"):
    assert f" | {name} {train[0][name]:.4f} | " in step_1, (name, step_1)
  assert "frozen reward: the trained params of another run" in log


def test_reference_and_reward_model_stay_frozen(policy_run):
  sft, rm, workdir, _ = policy_run
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]  # noqa: E731
  quiet = dict(print_fn=lambda line: None)
  frozen, _ = checkpoints.restore_raw_params(workdir, 4, item="frozen", **quiet)
  assert set(frozen) == {"reference", "reward"}
  for got, source in ((frozen["reference"], sft), (frozen["reward"], rm)):
    expected = checkpoints.restore_raw_params(source, **quiet)[0]
    assert all(np.array_equal(a, b) for a, b in zip(leaves(got), leaves(expected)))
  policy = checkpoints.restore_raw_params(workdir, 4, **quiet)[0]
  fine_tuned = checkpoints.restore_raw_params(sft, **quiet)[0]
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(policy), leaves(fine_tuned)))


def test_decoder_only_prompts_are_the_unweighted_tokens():
  tokens = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 11, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
  weights = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], jnp.float32)
  prompts, valid = batch_prompts({"response_0": tokens, "response_0_weights": weights})
  np.testing.assert_array_equal(prompts, [[5, 6] + [PAD_ID] * 4, [9] + [PAD_ID] * 5,
                                          [PAD_ID] * 6])
  np.testing.assert_array_equal(valid, [True, True, False])


@pytest.mark.parametrize("architecture", ["encoder_decoder", "decoder_only"])
def test_reward_scores_of_k_responses_per_prompt_read_each_pair_alone(architecture):
  """Responses [k b', R] to prompts [b', P]: each scores as its (prompt, response) pair alone,
  unpadded, read at the response's last token, less the bias."""
  config = ModelConfig(architecture=architecture, vocab_size=40, d_model=16, num_heads=2,
                       d_ff=32, num_encoder_layers=1 if architecture == "encoder_decoder" else 0,
                       num_decoder_layers=1, max_len=32, dropout_rate=0.0)
  rm = reward_model(config.eval())
  params = init_params(rm, jax.random.PRNGKey(2))
  prompts = [[5, 6, 7], [8]]
  responses = [[11, EOS_ID], [12, 13, 14, EOS_ID], [15, 16], [17, EOS_ID]]  # 2 per prompt
  pad = lambda rows, width: jnp.asarray([r + [PAD_ID] * (width - len(r)) for r in rows])  # noqa: E731
  got = reward_scores(rm, 0.25, params, pad(prompts, 4), pad(responses, 5))
  for row, response in enumerate(responses):
    prompt = prompts[row // 2]
    if rm.has_encoder:
      rewards = rm.apply({"params": params}, jnp.asarray([prompt]), jnp.asarray([response]))
    else:
      rewards = rm.apply({"params": params}, jnp.asarray([prompt + response]))
    np.testing.assert_allclose(got[row], rewards[0, -1] - 0.25, atol=1e-5)


def test_clipped_surrogate_against_a_hand_computation():
  logprobs = jnp.log(jnp.array([[0.5, 0.9, 0.2]]))
  old = jnp.log(jnp.array([[0.5, 0.5, 0.5]]))  # ratios 1, 1.8, 0.4
  for advantage, expected in ((2.0, [-2.0, -1.2 * 2.0, -0.4 * 2.0]),
                              (-1.0, [1.0, 1.8, 0.8])):
    got = clipped_surrogate(logprobs, old, jnp.float32(advantage), epsilon=0.2)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
  # At π = π_old the gradient is REINFORCE's: -A ∇log π.
  grad = jax.grad(lambda lp: jnp.sum(clipped_surrogate(lp, old, 3.0, epsilon=0.2)))(old)
  np.testing.assert_allclose(grad, [[-3.0, -3.0, -3.0]], rtol=1e-6)


def test_bad_policy_inputs_are_one_line_errors(reward_run, data_dir, tmp_path):
  sft, rm, _ = reward_run
  for fields, message in [
      (dict(samples_per_prompt=1), "config.policy.samples_per_prompt must be >= 2 (rloo's"),
      (dict(algorithm="ppo"), "config.policy.algorithm must be one of ('rloo', 'grpo')"),
      (dict(temperature=0.0), "config.policy.temperature must be > 0"),
      (dict(max_new_tokens=64), "config.policy.max_new_tokens + config.data.seq_len (the "
                                "prompt) = 160 does not fit the decoder")]:
    config = policy_config(data_dir, sft, rm, **fields)
    if fields.get("max_new_tokens"):
      config = load_experiment("policy", "decoder_only,tiny")
      config.update(init_from=sft)
      config.policy.update(reward_workdir=rm, max_new_tokens=64)
    with pytest.raises(ConfigError) as error:
      validate(config)
    assert message in str(error.value) and "\n" not in str(error.value)
  for init_from, reward_workdir, message in [
      (sft, sft, f"config.policy.reward_workdir={sft!r} is not a reward model: its run is stage "
                 f"'finetune'"),
      (sft, str(tmp_path), f"config.policy.reward_workdir={str(tmp_path)!r} is not a training "
                           f"workdir"),
      (rm, rm, f"config.init_from={rm!r} is a 'reward' run: stage 'policy' starts from"),
      (sft, "", "config.policy.reward_workdir must name the reward run that stage 'policy' "
                "reads"),
      ("", rm, "config.init_from must name the run stage 'policy' starts from"),
  ]:
    config = policy_config(data_dir, init_from, reward_workdir)
    with pytest.raises(ConfigError) as error:
      run(config, str(tmp_path / "policy"), print_fn=lambda line: None)
    assert message in str(error.value) and "\n" not in str(error.value)
  assert not (tmp_path / "policy").exists()
