"""Train-step throughput, compile time, memory and MFU of the encoder-decoder; prints JSON.

  python -m benchmarks.train_throughput                         # the reference setting, ~2 min
  python -m benchmarks.train_throughput --peer_models=PATH      # and a peer's step, alternated
  python -m benchmarks.train_throughput --sweep --out=DIR --steps=5 --rounds=2  # ~10 min

The reference setting (the defaults): d_model 256, 4 + 4 layers, 4 heads, d_ff 1024, a
vocabulary of 8192, inputs and targets of 128 tokens, global batch 16, dropout 0.1 on residuals
and attention weights, label smoothing 0.1, float32, Adam. The step is the project's own: the
`finetune` stage's loss (`training/stages.py`), the pure train step (`training/step.py`),
jit-compiled with the old state donated, on random full-length token rows.

`--peer_models` names the `models.py` of the Flax WMT example (google/flax
`examples/wmt/models.py`); it is imported from that path at run time, configured to the same
sizes (shared, tied embeddings; the same dropout), trained with its own loss recipe
(cross-entropy on `optax.smooth_labels` of one-hot targets) and the same Adam, and the two
steps are timed alternately for --rounds rounds; the JSON gives both and their paired ratio.

Reported per step: tokens/s (target tokens), step time median / min / max over --steps timed
steps after --warmup, compile time (lower + compile), the compiled program's memory
(arguments + outputs + temporaries), exact matmul FLOPs (every dot_general of the step's
jaxpr, attention included: `count_matmul_flops`) and MFU against the best of --matmul_repeats
float32 1024^3 matmuls timed in the same process (and, with --peak_tflops, a chip's nominal
peak).

`--sweep` times our step (no peer) over the SWEEP settings: sequence lengths 128 to 1024 at
2048 target tokens per step, batch 8 and 32 at length 128, and the paper's base model; it
writes the rows to DIR/sweep.json, a markdown table to DIR/sweep.md and tokens/s and MFU
against each axis to DIR/sweep.png (only the plot needs matplotlib, imported when drawing).

The benchmark imports only jax, flax, optax and numpy besides the project's model and
training code, so it runs on an image with those alone (tests/benchmarks/test_imports.py).
"""

import dataclasses
import importlib.util
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.training.stages import get_stage
from transformer.training.state import create_train_state, init_params
from transformer.training.step import make_train_step

_D_MODEL = flags.DEFINE_integer("d_model", 256, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Encoder and decoder layers each.")
_HEADS = flags.DEFINE_integer("heads", 4, "Attention heads.")
_D_FF = flags.DEFINE_integer("d_ff", 1024, "Feed-forward width.")
_VOCAB = flags.DEFINE_integer("vocab_size", 8192, "Vocabulary size.")
_LENGTH = flags.DEFINE_integer("length", 128, "Input and target tokens per example.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Examples per step.")
_DROPOUT = flags.DEFINE_float("dropout", 0.1, "Residual and attention dropout.")
_SCAN = flags.DEFINE_bool("scan_layers", False, "Layers under nn.scan (ModelConfig.scan_layers).")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "ModelConfig.remat.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per round.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds (each times every step alternately).")
_MATMUL_REPEATS = flags.DEFINE_integer("matmul_repeats", 20, "Timed 1024^3 matmuls.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0,
                                  "A chip's nominal peak per device (0: not reported).")
_PEER = flags.DEFINE_string("peer_models", "", "Path of a peer's models.py (Flax WMT example).")
_SWEEP = flags.DEFINE_bool("sweep", False, "Sweep length, batch and model size (see SWEEP).")
_OUT = flags.DEFINE_string("out", "", "--sweep: directory for sweep.json, sweep.md, sweep.png.")

LABEL_SMOOTHING = 0.1
# --sweep: (axis, value, ModelConfig overrides, batch size, length). Lengths keep 2048 target
# tokens per step (batch * length); "base" is the paper's base model (512 wide, 6 + 6 layers).
SWEEP = (
    [("length", n, {}, 2048 // n, n) for n in (128, 256, 512, 1024)]
    + [("batch", b, {}, b, 128) for b in (8, 32)]
    + [("size", "base", dict(d_model=512, num_heads=8, d_ff=2048, num_encoder_layers=6,
                             num_decoder_layers=6), 16, 128)])


def reference_model(**overrides: Any) -> ModelConfig:
  """The reference encoder-decoder from the flags, with ModelConfig `overrides`."""
  fields = dict(vocab_size=_VOCAB.value, d_model=_D_MODEL.value, num_heads=_HEADS.value,
                d_ff=_D_FF.value, num_encoder_layers=_LAYERS.value,
                num_decoder_layers=_LAYERS.value, dropout_rate=_DROPOUT.value,
                attention_dropout_rate=_DROPOUT.value, max_len=_LENGTH.value, dtype=_DTYPE.value,
                scan_layers=_SCAN.value, remat=_REMAT.value)
  return ModelConfig(**{**fields, **overrides})


def random_batch(batch_size: int, length: int, vocab_size: int) -> dict[str, np.ndarray]:
  """Full-length seq2seq rows (no padding): inputs and targets int32 [batch, length]."""
  rng = np.random.default_rng(0)
  batch = {}
  for name in ("inputs", "targets"):
    batch[name] = rng.integers(4, vocab_size, (batch_size, length), dtype=np.int32)
    batch[f"{name}_segmentation"] = np.ones((batch_size, length), np.int32)
    batch[f"{name}_position"] = np.broadcast_to(np.arange(length, dtype=np.int32),
                                                (batch_size, length)).copy()
  return batch


def adam() -> optax.GradientTransformation:
  """The Adam of both steps (the Flax WMT example's betas and epsilon, a constant rate)."""
  return optax.adam(5e-4, b1=0.9, b2=0.98, eps=1e-9)


def our_step(cfg: ModelConfig, batch: dict[str, np.ndarray]) -> tuple[Callable, Any, Any]:
  """(train_step(state, batch, rng) -> (state, sums), initial state, device batch)."""
  model = build_model(cfg.train())
  loss_fn = get_stage("finetune").make_loss(model, LABEL_SMOOTHING)
  tx = adam()
  state = create_train_state(init_params(model, jax.random.key(0)), tx)
  return make_train_step(loss_fn, tx, "tokens"), state, jax.device_put(batch)


def load_module(path: str) -> Any:
  """Imports the Python file at `path` as a module."""
  if not os.path.isfile(path):
    raise app.UsageError(f"--peer_models: no file {path!r}")
  spec = importlib.util.spec_from_file_location("peer_models", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def peer_step(path: str, cfg: ModelConfig, batch: dict[str, np.ndarray]
              ) -> tuple[Callable, Any, Any]:
  """The Flax WMT example's train step at the sizes of `cfg`, as `our_step` returns it."""
  peer = load_module(path)
  peer_cfg = peer.TransformerConfig(
      vocab_size=cfg.vocab_size, output_vocab_size=cfg.vocab_size, share_embeddings=True,
      logits_via_embedding=True, dtype=cfg.jnp_dtype, emb_dim=cfg.d_model,
      num_heads=cfg.num_heads, num_layers=cfg.num_decoder_layers, qkv_dim=cfg.d_model,
      mlp_dim=cfg.d_ff, max_len=cfg.max_len, dropout_rate=cfg.dropout_rate,
      attention_dropout_rate=cfg.attention_dropout_rate, deterministic=False)
  model = peer.Transformer(peer_cfg)
  tx = adam()
  inputs, targets = jnp.asarray(batch["inputs"]), jnp.asarray(batch["targets"])
  params = jax.jit(model.init)(jax.random.key(0), inputs, targets)["params"]
  state = (params, tx.init(params))

  def train_step(state, batch, rng):
    params, opt_state = state

    def loss_fn(params):
      logits = model.apply({"params": params}, batch["inputs"], batch["targets"],
                           rngs={"dropout": rng})
      labels = optax.smooth_labels(jax.nn.one_hot(batch["targets"], cfg.vocab_size),
                                   LABEL_SMOOTHING)
      return jnp.mean(optax.softmax_cross_entropy(logits, labels))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss}
  return train_step, state, {"inputs": inputs, "targets": targets}


def count_matmul_flops(jaxpr: Any) -> float:
  """FLOPs of every dot_general in a (closed) jaxpr, 2 per multiply-add, sub-jaxprs included
  (a scan's body times its length)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      out = math.prod(eqn.outvars[0].aval.shape)
      total += 2.0 * out * math.prod(lhs[d] for d in lhs_contract)
      del rhs, lhs_batch  # the output's shape already holds the batch and free dimensions
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += times * count_matmul_flops(sub)
  return total


def matmul_peak(repeats: int) -> float:
  """Best FLOP/s of `repeats` float32 [1024, 1024] matmuls on the default device."""
  a = jax.random.normal(jax.random.key(0), (1024, 1024), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * 1024 ** 3 / best


@dataclasses.dataclass
class Timed:
  """A compiled step, its state, and its timings."""
  step: Callable
  state: Any
  batch: Any
  flops: float
  compile_s: float
  memory_bytes: int
  times: list[float] = dataclasses.field(default_factory=list)


def compile_step(train_step: Callable, state: Any, batch: Any) -> Timed:
  """Lowers and compiles the donated, jitted step; counts its FLOPs and memory."""
  rng = jax.random.key(1)
  flops = count_matmul_flops(jax.make_jaxpr(train_step)(state, batch, rng))
  start = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0,)).lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  memory_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  + memory.temp_size_in_bytes - memory.alias_size_in_bytes) if memory else -1
  return Timed(compiled, state, batch, flops, compile_s, memory_bytes)


def run_steps(timed: Timed, count: int, record: bool) -> None:
  """Runs `count` steps, each timed to completion (kept in timed.times if `record`)."""
  for i in range(count):
    start = time.perf_counter()
    timed.state, sums = timed.step(timed.state, timed.batch, jax.random.key(i))
    jax.block_until_ready(sums)
    if record:
      timed.times.append(time.perf_counter() - start)


def summary(timed: Timed, target_tokens: int, peak: float) -> dict[str, float]:
  """The JSON figures of one step's timings."""
  median = statistics.median(timed.times)
  result = {"tokens_per_s": round(target_tokens / median, 1),
            "step_s": {"median": round(median, 4), "min": round(min(timed.times), 4),
                       "max": round(max(timed.times), 4), "count": len(timed.times)},
            "compile_s": round(timed.compile_s, 2),
            "memory_mib": round(timed.memory_bytes / 2 ** 20, 1),
            "matmul_gflop_per_step": round(timed.flops / 1e9, 2),
            "mfu": round(timed.flops / median / peak, 3)}
  if _PEAK_TFLOPS.value:
    result["mfu_nominal"] = round(timed.flops / median / (_PEAK_TFLOPS.value * 1e12), 3)
  return result


def benchmark(cfg: ModelConfig, batch_size: int, length: int, peer_path: str = ""
              ) -> dict[str, Any]:
  """Times our step (and a peer's) alternately; returns the JSON object."""
  batch = random_batch(batch_size, length, cfg.vocab_size)
  steps = {"ours": compile_step(*our_step(cfg, batch))}
  if peer_path:
    steps["peer"] = compile_step(*peer_step(peer_path, cfg, batch))
  for timed in steps.values():
    run_steps(timed, _WARMUP.value, record=False)
  for _ in range(_ROUNDS.value):
    for timed in steps.values():
      run_steps(timed, _STEPS.value, record=True)
  peak = matmul_peak(_MATMUL_REPEATS.value)
  result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "load_average": round(os.getloadavg()[0], 2),
            "model": {"d_model": cfg.d_model, "layers": cfg.num_decoder_layers,
                      "heads": cfg.num_heads, "d_ff": cfg.d_ff, "vocab_size": cfg.vocab_size,
                      "dropout": cfg.dropout_rate, "dtype": cfg.dtype},
            "batch_size": batch_size, "length": length,
            "matmul_peak_tflops": round(peak / 1e12, 4)}
  for name, timed in steps.items():
    result[name] = summary(timed, batch_size * length, peak)
  if peer_path:
    ratios = [p / o for o, p in zip(steps["ours"].times, steps["peer"].times)]
    result["ours_over_peer"] = {"tokens_per_s": round(statistics.median(ratios), 3),
                                "compile_s": round(steps["ours"].compile_s
                                                   / steps["peer"].compile_s, 3)}
  return result


def sweep(out: str) -> list[dict[str, Any]]:
  """Runs every SWEEP setting; writes sweep.json, sweep.md and (with matplotlib) sweep.png."""
  rows = []
  for axis, value, overrides, batch_size, length in SWEEP:
    cfg = reference_model(max_len=length, **overrides)
    result = benchmark(cfg, batch_size, length)
    rows.append({"axis": axis, "value": value, "batch_size": batch_size, "length": length,
                 "d_model": cfg.d_model, "layers": cfg.num_decoder_layers,
                 "tokens_per_s": result["ours"]["tokens_per_s"], "mfu": result["ours"]["mfu"],
                 "step_s": result["ours"]["step_s"]["median"],
                 "load_average": result["load_average"]})
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "sweep.json"), "w") as f:
    json.dump(rows, f, indent=2)
  lines = ["| axis | value | batch | length | d_model | layers | tokens/s | MFU | s/step | load |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['axis']} | {r['value']} | {r['batch_size']} | {r['length']} | {r['d_model']} "
            f"| {r['layers']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.2f} | {r['step_s']:.2f} "
            f"| {r['load_average']} |" for r in rows]
  with open(os.path.join(out, "sweep.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  plot_sweep(rows, os.path.join(out, "sweep.png"))
  return rows


def plot_sweep(rows: list[dict[str, Any]], path: str) -> None:
  """tokens/s and MFU against length (and per model size) in one figure, if matplotlib is
  importable (the benchmark itself needs only jax, flax, optax and numpy)."""
  try:
    import matplotlib  # noqa: PLC0415  (optional: only the plot needs it)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
  except ImportError:
    print(f"matplotlib not importable: {path} not written", flush=True)
    return
  figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for axis, plot in zip(("length", "batch", "size"), axes):
    subset = [r for r in rows if r["axis"] == axis or (r["axis"], r["value"]) == ("length", 128)]
    labels = [str(r["value"] if r["axis"] == axis else {"length": 128, "batch": 16,
                                                         "size": "reference"}[axis])
              for r in subset]
    if axis == "batch":
      order = sorted(range(len(subset)), key=lambda i: int(labels[i]))
      subset, labels = [subset[i] for i in order], [labels[i] for i in order]
    plot.plot(labels, [r["tokens_per_s"] for r in subset], "o-", color="C0")
    plot.set_xlabel({"length": "sequence length (batch * length = 2048)",
                     "batch": "batch (length 128)", "size": "model"}[axis])
    plot.set_ylabel("target tokens/s", color="C0")
    twin = plot.twinx()
    twin.plot(labels, [r["mfu"] for r in subset], "s--", color="C1")
    twin.set_ylabel("MFU (of the measured matmul peak)", color="C1")
    twin.set_ylim(0, 1)
  figure.suptitle(f"train step, {jax.devices()[0].device_kind}: tokens/s and MFU")
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
  del argv
  if _SWEEP.value:
    if not _OUT.value:
      raise app.UsageError("--sweep needs --out=DIR for its table and plot")
    sweep(_OUT.value)
    return
  print(json.dumps(benchmark(reference_model(), _BATCH.value, _LENGTH.value, _PEER.value),
                   indent=2), flush=True)


if __name__ == "__main__":
  app.run(main)
