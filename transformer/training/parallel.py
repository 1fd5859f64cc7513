"""Device placement of state, batches and steps, for one host or many: the `Layout` of a run.

Two modes (`config.parallelism.mode`), one pure `train_step(state, batch, rng)` (step.py):

- `jit` (default): a `Mesh` with axes

      data    the batch is split over it; params and optimizer state are replicated;
      fsdp    the batch is split over it too, and params + optimizer state are split on
              their 'embed' dimension (all-gathered per layer by XLA when used);
      tensor  params are split on 'heads', 'mlp' and 'vocab' (Megatron-style); the batch is
              replicated over it and activations are split along those dimensions.

  Logical axis names on the params (`nn.with_logical_partitioning` in the models) map to mesh
  axes through `LOGICAL_RULES`. The batch is split over data × fsdp. The state is created
  sharded (`jax.jit(init, out_shardings=...)`), and the step is `jax.jit` with in/out shardings,
  donating the old state. XLA inserts the collectives; the step itself has none.
- `pmap`: classic data parallelism over every device (axis 'batch'): the step runs under
  `jax.pmap` on a replica of the state per device, with its `lax.psum` of gradients and
  metric sums over 'batch'. Dropout keys are folded with the device index, so with dropout on
  a pmap step draws other masks than one device would (with dropout off it gives the same
  numbers).

In both modes the state, the rng and the metric sums outside the step are global `jax.Array`s
(jit: sharded by the rules; pmap: replicated over all devices), so the loop, the Orbax
checkpoints (each process writes its own shards, nothing is gathered to one host) and restores
into another layout work the same way. A pmap step converts the replicated state to and from
its stacked [local_devices, ...] form around the `pmap` call (a copy on each device, no
communication).

Multi-host: `initialize_distributed` joins the processes; each process feeds only its rows of
the global batch (`put_batch`), and metric sums come back reduced over all devices of all
processes. Under `failures_end_every_process` an error on one process ends every process
within seconds with its message, instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from transformer import cli
from transformer.cli import ConfigError
from transformer.training.state import TrainState

if TYPE_CHECKING:  # annotations only: the layout runs without ml_collections installed
  import ml_collections

MESH_AXES = ("data", "fsdp", "tensor")
PMAP_AXIS = "batch"
# Logical axis (models, and 'batch' for the rows of a batch) -> mesh axes it is split over.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("layers", None),  # the stacked layers of scan_layers: every device holds all of them
)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a run's arrays live.

  mode: 'jit' | 'pmap'.
  mesh: jit: axes MESH_AXES; pmap: one axis PMAP_AXIS over all devices of all processes.
  state_sharding: a TrainState of NamedShardings (pmap: all replicated).
  batch_sharding: jit: rows [global_batch, ...] over data × fsdp; pmap: the leading axis of a
    [local_devices, rows per device, ...] batch over this process's devices.
  axis_name: what the train step psums over: None (jit) | PMAP_AXIS (pmap).
  """
  mode: str
  mesh: Mesh
  state_sharding: TrainState
  batch_sharding: NamedSharding
  axis_name: str | None

  @property
  def replicated(self) -> NamedSharding:
    """A copy on every device of the mesh (the rng, metric sums)."""
    return NamedSharding(self.mesh, PartitionSpec())


# ------------------------------------------------------------------------------ layout

def mesh_shape(config: ml_collections.ConfigDict, device_count: int, process_count: int
               ) -> tuple[int, int, int]:
  """(data, fsdp, tensor) of the run's mesh; ConfigError naming the field if it cannot work.

  pmap mode gives (device_count, 1, 1). Checks, before anything is built or compiled: the mesh
  covers exactly the devices; the global batch (and each of its grad_accum_steps microbatches)
  divides over the devices that split it; every process feeds whole rows of its own.
  """
  p = config.parallelism
  if p.mode == "pmap":
    if p.data not in (-1, device_count):
      raise ConfigError(f"config.parallelism.data must be -1 or the device count ({device_count}) "
                        f"in pmap mode, got {p.data}")
    data = device_count
  elif p.data == -1:
    if device_count % (p.fsdp * p.tensor):
      raise ConfigError(f"config.parallelism.fsdp × tensor ({p.fsdp} × {p.tensor}) must divide the "
                        f"device count ({device_count})")
    data = device_count // (p.fsdp * p.tensor)
  else:
    data = p.data
  shape = (data, p.fsdp, p.tensor)
  if int(np.prod(shape)) != device_count:
    raise ConfigError(f"config.parallelism.data × fsdp × tensor = {data} × {p.fsdp} × {p.tensor} = "
                      f"{int(np.prod(shape))} must equal the device count ({device_count})")
  batch_devices = data * p.fsdp
  per_step = batch_devices * config.grad_accum_steps
  if config.global_batch_size % per_step:
    raise ConfigError(f"config.global_batch_size ({config.global_batch_size}) must be divisible "
                      f"by the devices that split the batch ({batch_devices}: "
                      f"{'all devices' if p.mode == 'pmap' else 'parallelism.data × fsdp'}) × "
                      f"config.grad_accum_steps ({config.grad_accum_steps}) = {per_step}")
  if batch_devices % process_count:
    raise ConfigError(f"config.parallelism.data × fsdp ({batch_devices}) must be a multiple of the "
                      f"process count ({process_count}): each process feeds its own rows")
  return shape


def make_layout(config: ml_collections.ConfigDict, boxed_state: TrainState,
                devices: list[jax.Device] | None = None) -> Layout:
  """The run's layout over `devices` (default: all devices of all processes).

  Args:
    config: the run config (parallelism section, global_batch_size, grad_accum_steps).
    boxed_state: `state.boxed_state_shapes(...)`: the TrainState's shapes with logical axis boxes.
    devices: a subset of jax.devices() to use (tests: a 1-device reference in an 8-device process).
  """
  devices = list(jax.devices() if devices is None else devices)
  local = [d for d in devices if d.process_index == jax.process_index()]
  process_count = len({d.process_index for d in devices})
  data, fsdp, tensor = mesh_shape(config, len(devices), process_count)
  specs = nn.get_partition_spec(boxed_state)
  if config.parallelism.mode == "pmap":
    mesh = Mesh(np.asarray(devices), (PMAP_AXIS,))
    replicated = NamedSharding(mesh, PartitionSpec())
    state_sharding = jax.tree.map(lambda _: replicated, specs,
                                  is_leaf=lambda x: isinstance(x, PartitionSpec))
    batch_sharding = NamedSharding(Mesh(np.asarray(local), (PMAP_AXIS,)), PartitionSpec(PMAP_AXIS))
    return Layout("pmap", mesh, state_sharding, batch_sharding, PMAP_AXIS)
  mesh = jax.make_mesh((data, fsdp, tensor), MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices)
  state_sharding = nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)
  batch_sharding = nn.logical_to_mesh_sharding(PartitionSpec("batch"), mesh, LOGICAL_RULES)
  return Layout("jit", mesh, state_sharding, batch_sharding, None)


def describe(layout: Layout) -> str:
  """One line: mode and mesh, e.g. 'jit over mesh data 2 × fsdp 2 × tensor 2 (8 devices,
  1 process)'."""
  axes = " × ".join(f"{name} {size}" for name, size in layout.mesh.shape.items())
  processes = len({d.process_index for d in layout.mesh.devices.flat})
  plural = lambda n, word, suffix: f"{n} {word}{suffix if n > 1 else ''}"  # noqa: E731
  return (f"{layout.mode} over mesh {axes} ({plural(layout.mesh.size, 'device', 's')}, "
          f"{plural(processes, 'process', 'es')})")


# ------------------------------------------------------------------------------ placement

def jit_init_state(layout: Layout, init_fn: Callable[[jax.Array], TrainState]
                   ) -> Callable[[jax.Array], TrainState]:
  """init_fn compiled to compute its state directly into the layout: no device ever holds
  more than its shards."""
  return jax.jit(init_fn, out_shardings=layout.state_sharding)


def init_state(layout: Layout, init_fn: Callable[[jax.Array], TrainState],
               rng: jax.Array) -> TrainState:
  """init_fn(rng) computed directly into the layout (`jit_init_state`, compiled each call)."""
  return jit_init_state(layout, init_fn)(rng)


def put_state(layout: Layout, state: TrainState) -> TrainState:
  """A state (host or device arrays, equal on every process) placed in the layout."""
  return jax.device_put(state, layout.state_sharding)


def replicate(layout: Layout, value: Any) -> Any:
  """A host value (equal on every process) copied to every device of the layout, e.g. an rng."""
  return jax.device_put(value, layout.replicated)


def put_batch(layout: Layout, rows: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """This process's rows [global_batch / process_count, ...] of a global batch on its devices.

  jit: one global array [global_batch, ...] per feature, split over data × fsdp.
  pmap: [local_devices, rows / local_devices, ...] per feature.
  """
  if layout.mode == "jit":
    return {name: jax.make_array_from_process_local_data(layout.batch_sharding, np.asarray(value))
            for name, value in rows.items()}
  count = layout.batch_sharding.mesh.size
  return {name: jax.device_put(np.asarray(value).reshape(count, -1, *value.shape[1:]),
                               layout.batch_sharding) for name, value in rows.items()}


def to_host(tree: Any) -> Any:
  """numpy copies of global arrays on every process (all processes must call it: it gathers)."""
  def get(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def _stacked(layout: Layout, tree: Any) -> Any:
  """pmap: replicated global arrays -> [local_devices, ...] arrays, one copy per device."""
  def stack(x: jax.Array) -> jax.Array:
    shards = {s.device: s.data for s in x.addressable_shards}
    devices = list(layout.batch_sharding.mesh.devices.flat)
    return jax.make_array_from_single_device_arrays(
        (len(devices), *x.shape), layout.batch_sharding, [shards[d][None] for d in devices])
  return jax.tree.map(stack, tree)


def _unstacked(layout: Layout, tree: Any) -> Any:
  """pmap: [local_devices, ...] arrays equal on every device -> replicated global arrays."""
  return jax.tree.map(lambda x: jax.make_array_from_single_device_arrays(
      x.shape[1:], layout.replicated, [s.data[0] for s in x.addressable_shards]), tree)


# ------------------------------------------------------------------------------ steps

def _pmapped_train_step(layout: Layout, train_step: Callable) -> Callable:
  """pmap of train_step with a per-device dropout key, donating the (stacked) state."""
  def per_device(state: TrainState, batch: Any, rng: jax.Array):
    return train_step(state, batch, jax.random.fold_in(rng, jax.lax.axis_index(PMAP_AXIS)))
  return jax.pmap(per_device, axis_name=PMAP_AXIS, donate_argnums=(0,),
                  devices=list(layout.batch_sharding.mesh.devices.flat))


def jit_train_step(layout: Layout, train_step: Callable) -> Callable:
  """The layout's step(state, batch, rng) -> (state, sums); state, rng and sums as global arrays.

  `train_step` must be built with `axis_name=layout.axis_name`. The old state is donated.
  """
  if layout.mode == "jit":
    return jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(layout.state_sharding, layout.batch_sharding, layout.replicated),
                   out_shardings=(layout.state_sharding, layout.replicated))
  pmapped = _pmapped_train_step(layout, train_step)

  def step(state: TrainState, batch: Any, rng: jax.Array):
    return _unstacked(layout, pmapped(_stacked(layout, state), batch, _stacked(layout, rng)))
  return step


def jit_eval_step(layout: Layout, eval_step: Callable) -> Callable:
  """The layout's eval(params, batch, frozen) -> sums (global arrays); `eval_step` built with
  layout.axis_name."""
  if layout.mode == "jit":
    return jax.jit(eval_step, in_shardings=(layout.state_sharding.params, layout.batch_sharding,
                                            layout.state_sharding.frozen),
                   out_shardings=layout.replicated)
  pmapped = jax.pmap(eval_step, axis_name=PMAP_AXIS,
                     devices=list(layout.batch_sharding.mesh.devices.flat))
  return lambda params, batch, frozen: _unstacked(layout, pmapped(
      _stacked(layout, params), batch, _stacked(layout, frozen)))


def lower_train_step(layout: Layout, train_step: Callable, state: TrainState,
                     batch: Mapping[str, jax.ShapeDtypeStruct]) -> Any:
  """The layout's train step lowered for abstract (state, global batch [B, ...]) shapes (dry
  run)."""
  rng = jax.ShapeDtypeStruct((2,), np.uint32)
  if layout.mode == "jit":
    return jit_train_step(layout, train_step).lower(state, batch, rng)
  count = layout.batch_sharding.mesh.size
  stack = lambda x, shape: jax.ShapeDtypeStruct((count, *shape), x.dtype)  # noqa: E731
  return _pmapped_train_step(layout, train_step).lower(
      jax.tree.map(lambda x: stack(x, x.shape), state),
      {name: stack(x, (x.shape[0] // count, *x.shape[1:])) for name, x in batch.items()},
      stack(rng, rng.shape))


# ------------------------------------------------------------------------------ processes

def initialize_distributed(environ: Mapping[str, str] = os.environ) -> None:
  """Joins this process to the others (`jax.distributed.initialize`); call before any other jax use.

  The coordinator, process count and id come from JAX_COORDINATOR_ADDRESS (host:port),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID when set, else from the platform (Cloud TPU, SLURM,
  Open MPI, Kubernetes: jax detects them). CPU collectives across processes use gloo.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  number = lambda name: int(environ[name]) if name in environ else None  # noqa: E731
  jax.distributed.initialize(coordinator_address=environ.get("JAX_COORDINATOR_ADDRESS"),
                             num_processes=number("JAX_NUM_PROCESSES"),
                             process_id=number("JAX_PROCESS_ID"))


def main_process_first(fn: Callable[[], Any], name: str) -> Any:
  """fn() on process 0, then (after a barrier named `name`) on the others, e.g. to train a
  tokenizer once and let the other processes load it."""
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(name)
  return fn() if jax.process_index() != 0 else result


# ------------------------------------------------------------------------------ failures

FAILURE_KEY = "transformer/failure"  # in the coordination service's key-value store
_ACK_KEY = "transformer/failure_ack/"
_GONE_KEY = "transformer/failure_gone"  # set by the failing process just before it exits
_POLL_MS = 1000  # how long one wait for the failure key blocks
_ACK_SECONDS = 10.0  # how long a failing process waits for the others to see its message
_GONE_SECONDS = 0.5  # how long process 0 then gives it to exit before leaving itself


def _coordination_client() -> Any:
  """The coordination service client of `jax.distributed` (None if not initialized)."""
  from jax._src import distributed  # (its key-value store has no public API)
  return getattr(distributed.global_state, "client", None)


class _FailureWatcher:
  """A daemon thread that ends this process (exit 1) with the message of another process's
  failure as soon as it appears in the key-value store."""

  def __init__(self, client: Any):
    self._client, self._stopped = client, threading.Event()
    self._thread = threading.Thread(target=self._watch, name="failure-watcher", daemon=True)

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    self._stopped.set()
    self._thread.join(timeout=2 * _POLL_MS / 1000)

  def _watch(self) -> None:
    while not self._stopped.is_set():
      try:
        message = self._client.blocking_key_value_get(FAILURE_KEY, _POLL_MS)
      except Exception as e:  # (a timeout, or the service is gone)
        if "DEADLINE_EXCEEDED" in str(e) or self._stopped.is_set():
          continue
        message = f"lost the coordination service ({cli.one_line(e)[:200]})"
      if self._stopped.is_set():
        return
      try:
        self._client.key_value_set(f"{_ACK_KEY}{jax.process_index()}", "seen")
      except Exception:  # (the failing process may be gone already)
        pass
      os.write(2, f"error: {message}\n".encode())
      if jax.process_index() == 0:  # hosts the service: leaving first would abort the failing
        try:                        # process (its client sees the service die) before it exits
          self._client.blocking_key_value_get(_GONE_KEY, int(_ACK_SECONDS * 1000))
          time.sleep(_GONE_SECONDS)
        except Exception:  # (it is gone already, or never said so in time: leave anyway)
          pass
      os._exit(cli.STOP_STATUS)


def _report_failure(client: Any, message: str) -> None:
  """Puts `message` in the key-value store and waits (a few seconds at most) until every other
  process has seen it (process 0 hosts the store, so it must not leave before that), then says
  it is leaving: process 0, seeing that, gives it a moment to exit before leaving itself, as a
  client whose service dies aborts its process (SIGABRT, not this one's exit status)."""
  try:
    client.key_value_set(FAILURE_KEY, message)
  except Exception:  # (another process failed first: its message stands)
    return
  deadline = time.monotonic() + _ACK_SECONDS
  for index in range(jax.process_count()):
    if index == jax.process_index():
      continue
    remaining = int(max(deadline - time.monotonic(), 0.0) * 1000)
    try:
      client.blocking_key_value_get(f"{_ACK_KEY}{index}", max(remaining, 1))
    except Exception:  # (it did not answer in time: leave anyway)
      break
  try:
    client.key_value_set(_GONE_KEY, "leaving")  # process 0 may now leave too
  except Exception:
    pass


@contextlib.contextmanager
def failures_end_every_process() -> Iterator[None]:
  """In a multi-process run, an error raised in the `with` block on one process prints its
  one-line message there (cli.describe; a bug keeps its traceback), tells the other processes,
  which print `error: process <i> failed: <message>` and exit 1 within seconds, and exits
  (os._exit, skipping the shutdown barrier that would wait for them). SystemExit (a stop
  every process agreed on) passes through. One process: nothing changes."""
  client = _coordination_client() if jax.process_count() > 1 else None
  if client is None:
    yield
    return
  watcher = _FailureWatcher(client)
  watcher.start()
  try:
    yield
  except SystemExit:
    raise
  except BaseException as error:
    described = cli.describe(error)
    if described is None or cli.verbose():
      traceback.print_exc()
    message, status = described or (f"{type(error).__name__}: {cli.one_line(error)}",
                                    cli.STOP_STATUS)
    print(f"error: {message}", file=sys.stderr, flush=True)
    watcher.stop()
    _report_failure(client, f"process {jax.process_index()} failed: {message}")
    os._exit(status)
  finally:
    watcher.stop()
