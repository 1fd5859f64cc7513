"""Train steps under given layouts, for the parallelism tests.

Importable (`train`, the single-device reference of the multi-process test), and runnable as
`python tests/training/parallel_driver.py RUN.json OUT.json` in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed when jax
starts, so the 8-device checks cannot run inside the pytest process). RUN.json holds
{'config': run config dict, 'tokenizer': spm.model path, 'workdir': scratch dir} and
optionally 'steps_only': true (and 'layouts', names of LAYOUTS); OUT.json receives the losses
of every layout and the checkpoint round trips (see `main`), or with 'steps_only' those of
`compare_steps`.

`train` drives the run's own assembly (`training/assembly.py`, what `loop.run` uses: same
init and dropout keys, one summarized loss per step), without data loading, eval or logging,
so one layout's compiled step can be fed the same global batches as another's.
"""

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from transformer.data import pipeline
from transformer.training import checkpoints, parallel
from transformer.training.assembly import Assembly, assemble
from transformer.training.loop import sum_metrics

Rows = Mapping[str, np.ndarray]


def train(parts: Assembly, state: Any, rng: jax.Array,
          batches: Sequence[Rows]) -> tuple[list[dict[str, float]], Any]:
  """{'loss', 'grad_norm'} of the next len(batches) steps of `parts` from `state`, and the state
  after them."""
  records = []
  for rows in batches:
    state, sums = parts.train_step(state, parts.put_batch(rows),
                                   jax.random.fold_in(rng, int(state.step)))
    totals = sum_metrics([sums])
    records.append({"loss": parts.stage.summarize(totals)["loss"],
                    "grad_norm": totals["grad_norm"]})
  return records, state


def sgd_update(parts: Assembly, rows: Rows) -> list[np.ndarray]:
  """The params' change after one plain-SGD step on `rows` (-rate × gradient): the gradient
  with its scale, which Adam would normalise away."""
  state, rng = parts.init()
  before = parallel.to_host(state.params)
  _, state = train(parts, state, rng, [rows])
  after = parallel.to_host(state.params)
  return [a - b for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))]


def relative_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
  """max |a - b| / max |b| over the leaves."""
  scale = max(float(np.max(np.abs(y))) for y in b)
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / scale


def global_batches(config: ml_collections.ConfigDict, tokenizer: Any, steps: int,
                   process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """The first `steps` global training batches of a run over `process_count` processes
  (their per-process rows concatenated in process order, as a global array lays them out)."""
  iterators = [pipeline.make_dataset(config.data, "train",
                                     global_batch_size=config.global_batch_size,
                                     seed=config.seed, train=True, process_index=i,
                                     process_count=process_count, tokenizer=tokenizer)
               for i in range(process_count)]
  batches = []
  for _ in range(steps):
    parts = [next(it) for it in iterators]
    batches.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  return batches


def with_parallelism(config: ml_collections.ConfigDict, **fields: Any) -> ml_collections.ConfigDict:
  """A copy of `config` with config.parallelism fields replaced (others back to defaults)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.parallelism.update(mode="jit", data=-1, fsdp=1, tensor=1)
  config.parallelism.update(**fields)
  return config


def without_dropout(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  return config


def with_sgd(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Plain SGD at a constant rate 1, no clipping: one step's update is minus the gradient."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.optimizer.update(name="sgd", schedule="constant", learning_rate=1.0, warmup_steps=0,
                          grad_clip_norm=0.0)
  return config


def max_difference(a: Sequence[float], b: Sequence[float]) -> float:
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def round_trip(source: Assembly, target: Assembly, state: Any, rng: jax.Array, data: Iterator,
               next_batch: Rows, directory: str) -> dict[str, Any]:
  """Saves `state` under `source`'s layout, restores it under `target`'s, and trains one more
  step under each: the restored params and optimizer state must equal the saved ones and the
  next losses agree."""
  saved, saved_opt = parallel.to_host(state.params), parallel.to_host(state.opt_state)
  manager = checkpoints.make_manager(directory, source.config)
  checkpoints.save(manager, state, rng, data, source.config)
  manager.wait_until_finished()
  step = int(state.step)
  template, target_rng = target.init()
  restored, restored_rng = checkpoints.restore(manager, step, template, target_rng, data)
  manager.close()
  params_equal = all(np.array_equal(a, b) for a, b in
                     zip(jax.tree.leaves(saved),
                         jax.tree.leaves(parallel.to_host(restored.params))))
  opt_state_equal = all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(saved_opt), jax.tree.leaves(parallel.to_host(restored.opt_state))))
  shardings_match = all(x.sharding == s for x, s in zip(jax.tree.leaves(restored),
                                                        jax.tree.leaves(target.layout.state_sharding)))
  source_loss, _ = train(source, state, rng, [next_batch])
  target_loss, _ = train(target, restored, restored_rng, [next_batch])
  source_loss, target_loss = [r["loss"] for r in source_loss], [r["loss"] for r in target_loss]
  return {"source": parallel.describe(source.layout), "target": parallel.describe(target.layout),
          "params_equal": params_equal, "opt_state_equal": opt_state_equal,
          "shardings_match": shardings_match,
          "step": step, "source_loss": source_loss[0], "target_loss": target_loss[0],
          "difference": abs(source_loss[0] - target_loss[0])}


LAYOUTS = {"jit data=8": dict(data=8), "pmap 8": dict(mode="pmap")}


def compare_steps(config: ml_collections.ConfigDict, batches: Sequence[Rows],
                  layouts: Sequence[str] = tuple(LAYOUTS)) -> dict[str, Any]:
  """Losses and gradient norms of len(batches) steps, and one plain-SGD update, under each of
  `layouts` (of LAYOUTS) against 1 device (a stage without dropout, e.g. dpo)."""
  devices = jax.devices()
  out: dict[str, Any] = {"losses": {}, "grad_norms": {}, "sgd_update_difference": {}}
  reference_update = sgd_update(assemble(with_sgd(config), devices[:1]), batches[0])
  for name, fields, layout_devices in (("1 device", {}, devices[:1]), *(
      (name, LAYOUTS[name], devices) for name in layouts)):
    parts = assemble(with_parallelism(config, **fields), layout_devices)
    state, rng = parts.init()
    records, _ = train(parts, state, rng, batches)
    out["losses"][name] = [r["loss"] for r in records]
    out["grad_norms"][name] = [r["grad_norm"] for r in records]
    if fields:
      update = sgd_update(assemble(with_sgd(with_parallelism(config, **fields)), devices),
                          batches[0])
      out["sgd_update_difference"][name] = relative_difference(update, reference_update)
  return out


def main(run_path: str, out_path: str) -> None:
  """Losses and gradient norms over 5 steps under 1 device, jit data=8, jit 2×2×2 (dropout on)
  and 1 device, pmap 8 (dropout off: pmap draws per-device masks); one plain-SGD update under
  each layout against one device's; then checkpoint round trips jit 2×2×2 -> 1 device and
  pmap 8 -> jit data=2, each followed by a 6th step."""
  with open(run_path) as f:
    run = json.load(f)
  config = ml_collections.ConfigDict(run["config"])
  tokenizer = pipeline.load_tokenizer_for(config.data, run["tokenizer"])
  data = pipeline.make_dataset(config.data, "train", global_batch_size=config.global_batch_size,
                               seed=config.seed, train=True, process_index=0, process_count=1,
                               tokenizer=tokenizer)
  batches = [next(data) for _ in range(6)]
  devices = jax.devices()
  assert len(devices) == 8, devices
  if run.get("steps_only"):
    with open(out_path, "w") as f:
      json.dump(compare_steps(config, batches[:3], run.get("layouts", tuple(LAYOUTS))), f,
                indent=2)
    return
  out: dict[str, Any] = {"losses": {}, "grad_norms": {}, "sgd_update_difference": {}, "seconds": {}}

  def run_layout(name: str, parts: Assembly) -> Any:
    start = time.perf_counter()
    state, rng = parts.init()
    records, state = train(parts, state, rng, batches[:5])
    out["losses"][name] = [r["loss"] for r in records]
    out["grad_norms"][name] = [r["grad_norm"] for r in records]
    out["seconds"][name] = time.perf_counter() - start
    return state, rng

  reference = assemble(config, devices[:1])
  run_layout("1 device", reference)
  run_layout("jit data=8", assemble(with_parallelism(config, data=8), devices))
  sharded = assemble(with_parallelism(config, data=2, fsdp=2, tensor=2), devices)
  sharded_state, sharded_rng = run_layout("jit data=2 fsdp=2 tensor=2", sharded)
  plain = without_dropout(config)
  single = assemble(plain, devices[:1])
  run_layout("1 device, no dropout", single)
  pmap = assemble(with_parallelism(plain, mode="pmap"), devices)
  pmap_state, pmap_rng = run_layout("pmap 8, no dropout", pmap)

  sgd = with_sgd(plain)
  reference_update = sgd_update(assemble(sgd, devices[:1]), batches[0])
  for name, fields in (("jit data=8", dict(data=8)), ("jit data=2 fsdp=2 tensor=2",
                                                      dict(data=2, fsdp=2, tensor=2)),
                       ("pmap 8", dict(mode="pmap"))):
    update = sgd_update(assemble(with_parallelism(sgd, **fields), devices), batches[0])
    out["sgd_update_difference"][name] = relative_difference(update, reference_update)

  out["round_trips"] = [
      round_trip(sharded, reference, sharded_state, sharded_rng, data, batches[5],
                 os.path.join(run["workdir"], "jit_to_1")),
      round_trip(pmap, assemble(with_parallelism(plain, data=2), devices[:2]), pmap_state, pmap_rng,
                 data, batches[5], os.path.join(run["workdir"], "pmap_to_jit")),
  ]
  with open(out_path, "w") as f:
    json.dump(out, f, indent=2)


if __name__ == "__main__":
  main(*sys.argv[1:])
