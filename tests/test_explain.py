"""The explain walkthrough: every printed matrix against a plain NumPy Transformer, same params."""

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from transformer.walkthrough import format_walk, plot_heatmaps, walkthrough

MASKED = np.finfo(np.float32).min
WALKS = {
    "seed_notes": {},
    "custom": dict(inputs="the cat sat on the mat", targets="le chat", d_model=8,
                   encoder_heads=2, decoder_heads=4, d_ff=12, seed=3),
}


@pytest.fixture(scope="module")
def walks():
  return {name: walkthrough(**args) for name, args in WALKS.items()}


@pytest.fixture(params=list(WALKS))
def walk_and_args(request, walks):
  return walks[request.param], WALKS[request.param]


# ---- a second, independent Transformer in NumPy (float64), from the walk's params ----

def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _layer_norm(x: np.ndarray, p: dict, eps: float) -> np.ndarray:
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _sinusoids(length: int, d: int) -> np.ndarray:
  pe = np.zeros((length, d))
  for pos in range(length):
    for i in range(d // 2):
      angle = pos / 10000 ** (2 * i / d)
      pe[pos, 2 * i], pe[pos, 2 * i + 1] = np.sin(angle), np.cos(angle)
  return pe


def _attention(key: str, p: dict, x_q: np.ndarray, x_kv: np.ndarray, mask: np.ndarray,
               norm: dict, eps: float) -> tuple[dict, np.ndarray]:
  """Reference steps of one attention block + add & norm; returns (steps, block output)."""
  ref = {f"{key}.mask": mask}
  heads = p["query"]["kernel"].shape[1]
  project = lambda x, w: np.einsum("ld,dhk->lhk", x, w["kernel"]) + w["bias"]
  q, k, v = project(x_q, p["query"]), project(x_kv, p["key"]), project(x_kv, p["value"])
  weighted = []
  for h in range(heads):
    qk = q[:, h] @ k[:, h].T
    scaled = np.where(mask, qk / np.sqrt(q.shape[-1]), MASKED)
    weights = _softmax(np.where(mask, scaled, -np.inf))
    weighted.append(weights @ v[:, h])
    ref.update({f"{key}.head{h + 1}.q": q[:, h], f"{key}.head{h + 1}.k": k[:, h],
                f"{key}.head{h + 1}.v": v[:, h], f"{key}.head{h + 1}.qk": qk,
                f"{key}.head{h + 1}.scaled_scores": scaled, f"{key}.head{h + 1}.weights": weights,
                f"{key}.head{h + 1}.weighted_values": weighted[-1]})
  concat = np.concatenate(weighted, axis=-1)
  out = concat @ p["out"]["kernel"].reshape(concat.shape[-1], -1) + p["out"]["bias"]
  ref.update({f"{key}.concat": concat, f"{key}.output": out,
              f"{key}.add_norm": _layer_norm(x_q + out, norm, eps)})
  return ref, ref[f"{key}.add_norm"]


def _ffn(key: str, p: dict, x: np.ndarray, norm: dict, eps: float) -> tuple[dict, np.ndarray]:
  hidden = x @ p["wi"]["kernel"] + p["wi"]["bias"]
  out = np.maximum(hidden, 0) @ p["wo"]["kernel"] + p["wo"]["bias"]
  y = _layer_norm(x + out, norm, eps)
  return {f"{key}.hidden": hidden, f"{key}.output": out, f"{key}.add_norm": y}, y


def reference(walk, inputs: str, targets: str) -> dict[str, np.ndarray]:
  """Every step of the walk, recomputed in float64 NumPy from the sentences and the params."""
  vocabulary = ["<pad>", "<end>", "<start>", "<unk>"]
  for word in f"{inputs} {targets}".split():
    vocabulary += [word] if word not in vocabulary else []
  input_ids = np.array([vocabulary.index(w) for w in inputs.split()])
  decoder_ids = np.array([2] + [vocabulary.index(w) for w in targets.split()])
  target_ids = np.array([vocabulary.index(w) for w in targets.split()] + [1])
  eps, d = walk.encoder_config.layer_norm_epsilon, walk.encoder_config.d_model
  table = np.asarray(walk.encoder_params["token_embedding"]["embedding"], np.float64)
  ref = {"vocabulary": np.arange(len(vocabulary)), "encoder.ids": input_ids,
         "decoder.ids": decoder_ids, "decoder.target_ids": target_ids}
  streams = {}
  for stack, ids in (("encoder", input_ids), ("decoder", decoder_ids)):
    embeddings, pe = table[ids] * np.sqrt(d), _sinusoids(len(ids), d)
    streams[stack] = embeddings + pe
    ref.update({f"{stack}.embeddings": embeddings, f"{stack}.positional_encodings": pe,
                f"{stack}.embedded": streams[stack]})
  f64 = lambda tree: {k: f64(v) if isinstance(v, dict) else np.asarray(v, np.float64)
                      for k, v in tree.items()}
  enc = f64(walk.encoder_params["encoder"]["layer_0"])
  dec = f64(walk.decoder_params["decoder"]["layer_0"])
  s, t = len(input_ids), len(decoder_ids)

  steps, x = _attention("encoder.self_attention", enc["self_attention"], streams["encoder"],
                        streams["encoder"], np.ones((s, s), bool), enc["self_attention_norm"], eps)
  ref.update(steps)
  steps, encoded = _ffn("encoder.ffn", enc["ffn"], x, enc["ffn_norm"], eps)
  ref.update(steps)
  steps, y = _attention("decoder.self_attention", dec["self_attention"], streams["decoder"],
                        streams["decoder"], np.tril(np.ones((t, t), bool)),
                        dec["self_attention_norm"], eps)
  ref.update(steps)
  steps, y = _attention("decoder.cross_attention", dec["cross_attention"], y, encoded,
                        np.ones((t, s), bool), dec["cross_attention_norm"], eps)
  ref.update(steps)
  steps, y = _ffn("decoder.ffn", dec["ffn"], y, dec["ffn_norm"], eps)
  ref.update(steps)
  logits = y @ np.asarray(walk.decoder_params["token_embedding"]["embedding"], np.float64).T
  ref.update({"output.logits": logits, "output.probabilities": _softmax(logits),
              "output.predicted": _softmax(logits).argmax(-1)})
  return ref


# ---- tests ----

def test_every_printed_matrix_matches_numpy(walk_and_args):
  walk, args = walk_and_args
  defaults = dict(inputs="when you play the game of thrones", targets="you win or you die")
  ref = reference(walk, args.get("inputs", defaults["inputs"]),
                  args.get("targets", defaults["targets"]))
  keys = [step.key for step in walk.steps]
  assert len(keys) == len(set(keys))
  assert set(keys) == set(ref)
  for step in walk.steps:
    expected = ref[step.key]
    assert step.value.shape == expected.shape, step.key
    if np.issubdtype(step.value.dtype, np.floating):
      # 1e-6 absolute, or relative above 1: float32 itself resolves only ~1.2e-7 of a value.
      np.testing.assert_allclose(step.value, expected, rtol=1e-6, atol=1e-6, err_msg=step.key)
    else:
      np.testing.assert_array_equal(step.value, expected, err_msg=step.key)


def test_walk_shapes_and_heads(walk_and_args):
  walk, args = walk_and_args
  by_key = {step.key: step for step in walk.steps}
  d_model = args.get("d_model", 6)
  encoder_heads, decoder_heads = args.get("encoder_heads", 1), args.get("decoder_heads", 2)
  assert (walk.encoder_config.num_heads, walk.decoder_config.num_heads) == (encoder_heads,
                                                                            decoder_heads)
  assert by_key[f"encoder.self_attention.head{encoder_heads}.q"].value.shape[1] == (
      d_model // encoder_heads)
  assert f"encoder.self_attention.head{encoder_heads + 1}.q" not in by_key
  assert by_key[f"decoder.cross_attention.head{decoder_heads}.weights"].value.shape == (
      len(walk.decoder_inputs), len(walk.inputs))
  np.testing.assert_array_equal(walk.decoder_params["token_embedding"]["embedding"],
                                walk.encoder_params["token_embedding"]["embedding"])


def test_default_vocabulary_and_ids(walks):
  walk = walks["seed_notes"]
  assert walk.vocabulary[:4] == ("<pad>", "<end>", "<start>", "<unk>")
  assert walk.vocabulary[4:] == ("when", "you", "play", "the", "game", "of", "thrones", "win",
                                 "or", "die")
  np.testing.assert_array_equal(walk.decoder_inputs, [2, 5, 11, 12, 5, 13])
  np.testing.assert_array_equal(walk.targets, [5, 11, 12, 5, 13, 1])
  assert walk.encoder_config.d_model == 6 and walk.encoder_config.num_encoder_layers == 1


def test_masked_self_attention_is_zero_above_the_diagonal(walk_and_args):
  walk, _ = walk_and_args
  heads = [s for s in walk.steps if s.key.startswith("decoder.self_attention.head")
           and s.key.endswith(".weights")]
  assert len(heads) == walk.decoder_config.num_heads
  for step in heads:
    assert np.all(np.triu(step.value, k=1) == 0.0), step.key
    assert np.all(step.value[np.tril_indices(len(step.value))] > 0.0), step.key
    np.testing.assert_allclose(step.value.sum(-1), 1.0, atol=1e-6)


def test_printout_labels_and_paper_notes(walk_and_args):
  walk, _ = walk_and_args
  text = format_walk(walk)
  for label in ("vocabulary", "positional encodings", "X = embeddings + PE", "Q K^T",
                "Q K^T / sqrt(d_k)", "mask", "softmax weights", "weighted values",
                "Concat(head_1", "output projection", "add & norm", "FFN hidden",
                "masked self-attention", "cross-attention", "logits", "softmax(logits)",
                "predicted words:", "-inf"):
    assert label in text, label
  for difference in ("divide by sqrt(d_k)", "Q from the decoder, K and V from the encoder",
                     "two-layer FFN", "not one over the flattened matrix"):
    assert difference in text, difference


def test_heatmaps_written(walk_and_args, tmp_path):
  walk, _ = walk_and_args
  paths = plot_heatmaps(walk, str(tmp_path))
  assert sorted(os.path.basename(p) for p in paths) == [
      "decoder_cross_attention.png", "decoder_self_attention.png", "encoder_self_attention.png",
      "positional_encodings.png"]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_command_line_prints_and_plots_within_10_seconds(tmp_path):
  """`python -m transformer.explain --plot_dir` end to end.

  Asserts CPU time (user + sys), which bounds the wall time on an otherwise idle machine;
  the wall time on a shared machine depends on its other load, so it is only printed.
  """
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.time()
  result = subprocess.run([sys.executable, "-m", "transformer.explain", f"--plot_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  wall = time.time() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  assert result.returncode == 0, result.stderr
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  print(f"explain: {cpu:.1f} s CPU, {wall:.1f} s wall")
  assert cpu < 10.0
  assert "first prediction after <start>" in result.stdout
  assert len([f for f in os.listdir(tmp_path) if f.endswith(".png")]) == 4


@pytest.mark.parametrize("argv, message", [
    (["--d_model=6", "--decoder_heads=4"], "--decoder_heads=4"),
    (["--d_model=5", "--encoder_heads=1", "--decoder_heads=1"], "--d_model=5"),
    (["--targets= "], "--targets"),
])
def test_command_line_rejects_bad_flags(argv, message):
  result = subprocess.run([sys.executable, "-m", "transformer.explain", *argv],
                          capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode != 0
  assert message in result.stderr
