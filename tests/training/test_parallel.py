"""Parallelism: layouts give the single-device losses; checkpoints move between layouts; two
processes on loopback train like one; config errors name the field.

The 8-device checks run `parallel_driver.py` in a subprocess with 8 XLA host devices (the
device count is fixed when jax starts); the two-process check starts two `transformer.train
--distributed` processes joined over 127.0.0.1 with gloo collectives, 2 host devices each.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import portpicker
import pytest

from tests.training import parallel_driver
from tests.training.conftest import cached_tokenizer, load_experiment, tiny_experiment
from transformer.data import pipeline
from transformer.training import checkpoints, parallel, writer
from transformer.training.assembly import assemble
from transformer.training.checkpoints import tokenizer_path
from transformer.training.config import ConfigError, default_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-4
GRAD_NORM_TOLERANCE = 1e-3


def subprocess_env(device_count: int, **extra: str) -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={device_count}", **extra}


def tiny_run_config(tiny_config) -> ml_collections.ConfigDict:
  """A 1-layer LM, 16 rows per step in 2 microbatches (8 devices × 1 row each), dropout on."""
  config = tiny_config("lm")
  config.global_batch_size = 16
  config.grad_accum_steps = 2
  config.model.dropout_rate = 0.1
  return config


# ------------------------------------------------------------------------------ config errors

@pytest.mark.parametrize("fields, devices, processes, message", [
    (dict(data=3), 8, 1,
     "config.parallelism.data × fsdp × tensor = 3 × 1 × 1 = 3 must equal the device count (8)"),
    (dict(fsdp=3), 8, 1,
     "config.parallelism.fsdp × tensor (3 × 1) must divide the device count (8)"),
    (dict(data=4, fsdp=2), 8, 1,
     "config.global_batch_size (12) must be divisible by the devices that split "
     "the batch (8: parallelism.data × fsdp) × config.grad_accum_steps (1) = 8"),
    (dict(data=2, tensor=4), 8, 4,
     "config.parallelism.data × fsdp (2) must be a multiple of the process count (4)"),
    (dict(mode="pmap"), 8, 1, "(8: all devices)"),
    (dict(mode="pmap", data=4), 8, 1,
     "config.parallelism.data must be -1 or the device count (8) in pmap mode"),
])
def test_layout_errors_name_the_field(fields, devices, processes, message):
  config = default_config()
  config.global_batch_size = 12
  config.parallelism.update(**fields)
  with pytest.raises(ConfigError) as error:
    parallel.mesh_shape(config, devices, processes)
  assert message in str(error.value)


def test_grad_accum_steps_count_in_the_batch_split():
  config = default_config()
  config.global_batch_size, config.grad_accum_steps = 16, 4
  assert parallel.mesh_shape(config, 4, 1) == (4, 1, 1)
  config.parallelism.tensor = 2
  assert parallel.mesh_shape(config, 8, 1) == (4, 1, 2)  # tensor does not split the batch
  config.parallelism.tensor = 1
  with pytest.raises(ConfigError,
                     match=r"\(8: parallelism.data × fsdp\) × config.grad_accum_steps \(4\) = 32"):
    parallel.mesh_shape(config, 8, 1)


@pytest.mark.parametrize("fields, message", [
    (dict(mode="spmd"), "config.parallelism.mode must be one of ('jit', 'pmap')"),
    (dict(data=0), "config.parallelism.data must be >= 1 or -1"),
    (dict(tensor=0), "config.parallelism.tensor must be >= 1"),
    (dict(mode="pmap", fsdp=2), "config.parallelism.fsdp must be 1 in pmap mode"),
])
def test_config_validation_names_the_parallelism_field(fields, message):
  config = default_config()
  config.parallelism.update(**fields)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate(config)


def test_run_rejects_a_mesh_that_does_not_cover_the_devices_before_compiling(tiny_config, tmp_path):
  from transformer.training.loop import run
  config = tiny_config("lm")
  config.parallelism.data = 2  # this process has 1 device
  with pytest.raises(ConfigError, match=r"= 2 must equal the device count \(1\)"):
    run(config, str(tmp_path / "run"), print_fn=lambda line: None)
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ 8 host devices

def run_driver(request: dict, tmp_path) -> dict:
  """parallel_driver.py's report of `request` (a JSON run description) on 8 host devices, in
  a subprocess."""
  run_path, out_path = tmp_path / "run.json", tmp_path / "out.json"
  run_path.write_text(json.dumps(request))
  result = subprocess.run([sys.executable,
                           os.path.join(ROOT, "tests", "training", "parallel_driver.py"),
                           str(run_path), str(out_path)], cwd=ROOT, env=subprocess_env(8),
                          capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(out_path.read_text())


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, data_dir, tokenizer_dir):
  """parallel_driver's report: losses per layout, checkpoint round trips (one subprocess)."""
  tmp = tmp_path_factory.mktemp("eight_devices")
  config = tiny_run_config(lambda task: tiny_experiment(data_dir, task))
  # prepares the corpus slice here, not in the child
  tokenizer = cached_tokenizer(config, tokenizer_dir)
  return run_driver({"config": config.to_dict(), "tokenizer": tokenizer, "workdir": str(tmp)},
                    tmp)


def compared_steps(config: ml_collections.ConfigDict, tokenizer: str, tmp_path,
                   layouts: tuple[str, ...] = tuple(parallel_driver.LAYOUTS)) -> dict:
  """parallel_driver.compare_steps of `config` on 8 host devices (a subprocess)."""
  return run_driver({"config": config.to_dict(), "tokenizer": tokenizer,
                     "workdir": str(tmp_path), "steps_only": True, "layouts": list(layouts)},
                    tmp_path)


def assert_layouts_equal_one_device(report: dict, stage: str) -> None:
  """Every compared layout's losses, gradient norms and SGD update within 1e-5 of one device."""
  one = report["losses"]["1 device"]
  for name in report["sgd_update_difference"]:
    difference = parallel_driver.max_difference(report["losses"][name], one)
    norms = (parallel_driver.max_difference(report["grad_norms"][name],
                                            report["grad_norms"]["1 device"])
             / max(report["grad_norms"]["1 device"]))
    print(f"{stage} {name} vs 1 device, 3 steps: loss {difference:.2e}, grad norm {norms:.2e}, "
          f"SGD update {report['sgd_update_difference'][name]:.2e}")
    assert difference < 1e-5 and norms < 1e-5, (name, report)
    assert report["sgd_update_difference"][name] < 1e-5, (name, report)


@pytest.mark.slow
def test_dpo_step_on_8_devices_equals_one_device(tmp_path, data_dir, tokenizer_dir):
  """DPO reads the frozen reference (`TrainState.frozen`) in the step: jit data=8 and pmap 8
  give the one-device losses, gradient norms and SGD update on the same global batches."""
  config = load_experiment("dpo", "tiny")
  config.data.data_dir = data_dir
  config.global_batch_size = 8
  tokenizer = cached_tokenizer(config, tokenizer_dir)  # prepares the corpus slice here
  report = compared_steps(config, tokenizer, tmp_path)
  one = report["losses"]["1 device"]
  np.testing.assert_allclose(one[0], np.log(2.0), rtol=1e-6)  # the reference = the start
  assert abs(one[-1] - np.log(2.0)) > 1e-4  # the updates moved the policy off the reference
  assert_layouts_equal_one_device(report, "dpo")


def test_policy_step_on_8_devices_equals_one_device(tmp_path, data_dir, reward_run):
  """A policy step samples inside the jitted step (the frozen reference and reward model in
  the state): under jit data=8 (one prompt and its k samples per device) the draws, losses,
  gradient norms and SGD update are the one device's. (Under pmap each device draws its own
  samples, so it is not compared.)"""
  sft, rm, _ = reward_run
  config = load_experiment("policy", "tiny")
  config.data.data_dir = data_dir
  config.update(init_from=sft, global_batch_size=8)
  config.policy.reward_workdir = rm
  report = compared_steps(config, checkpoints.tokenizer_path(sft), tmp_path, ("jit data=8",))
  assert_layouts_equal_one_device(report, "policy")


def test_jit_and_pmap_layouts_give_the_single_device_losses(eight_devices):
  losses = eight_devices["losses"]
  reference, plain = losses["1 device"], losses["1 device, no dropout"]
  assert len(reference) == 5 and np.all(np.isfinite(reference)) and reference[-1] < reference[0]
  assert reference != plain  # dropout was on in the jit comparisons
  # jit: same dropout masks as one device (threefry keys are partitionable).
  # pmap draws per-device dropout masks, so it is compared with dropout off.
  for name, expected in (("jit data=8", reference), ("jit data=2 fsdp=2 tensor=2", reference),
                         ("pmap 8, no dropout", plain)):
    difference = parallel_driver.max_difference(losses[name], expected)
    print(f"{name} vs 1 device, 5 steps: max loss difference {difference:.2e}")
    assert difference < TOLERANCE, (name, losses[name], expected)


def test_every_layout_gives_the_single_device_gradient_scale(eight_devices):
  """Adam hides a gradient scale error in the losses; the gradient norm and an SGD step do not."""
  norms = eight_devices["grad_norms"]
  for name, reference in (("jit data=8", "1 device"), ("jit data=2 fsdp=2 tensor=2", "1 device"),
                          ("pmap 8, no dropout", "1 device, no dropout")):
    difference = (parallel_driver.max_difference(norms[name], norms[reference])
                  / max(norms[reference]))
    print(f"{name} vs 1 device, 5 steps: max relative gradient-norm difference {difference:.2e}")
    assert difference < TOLERANCE, (name, norms[name], norms[reference])
  for name, difference in eight_devices["sgd_update_difference"].items():
    print(f"{name} vs 1 device: one SGD update, max relative difference {difference:.2e}")
    assert difference < TOLERANCE, (name, difference)


def test_checkpoints_restore_under_another_layout(eight_devices):
  jit_to_one, pmap_to_jit = eight_devices["round_trips"]
  assert jit_to_one["source"].startswith("jit over mesh data 2 × fsdp 2 × tensor 2 (8 devices")
  assert jit_to_one["target"].startswith("jit over mesh data 1 × fsdp 1 × tensor 1 (1 device,")
  assert pmap_to_jit["source"].startswith("pmap over mesh batch 8")
  assert pmap_to_jit["target"].startswith("jit over mesh data 2 × fsdp 1 × tensor 1 (2 devices")
  for trip in (jit_to_one, pmap_to_jit):
    assert trip["step"] == 5 and trip["params_equal"] and trip["opt_state_equal"], trip
    assert trip["shardings_match"], trip
    assert trip["difference"] < TOLERANCE, trip


# ------------------------------------------------------------------------------ two processes

def two_process_config(tiny_config) -> ml_collections.ConfigDict:
  """8 rows per step (4 per process) in 2 microbatches; params and optimizer state split over
  all 4 devices of both processes (fsdp=4), so each process saves only its shards."""
  config = tiny_config("lm")
  config.global_batch_size = 8
  config.grad_accum_steps = 2
  config.parallelism.update(data=1, fsdp=4)
  config.num_train_steps = 5
  config.checkpoint_every_steps = config.eval_every_steps = 5
  # A schedule that does not depend on num_train_steps: the rerun extends the run to 7 steps.
  config.optimizer.update(schedule="paper", learning_rate=1.0)
  return config


def start_processes(config_path: str, workdir: str, extra_args: list[list[str]]
                    ) -> list[subprocess.Popen]:
  """`transformer.train --distributed` as processes 0, 1, ... (one per entry of `extra_args`,
  that process's own extra flags), joined over 127.0.0.1."""
  port = portpicker.pick_unused_port()
  procs = []
  for index, extra in enumerate(extra_args):
    env = subprocess_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                         JAX_NUM_PROCESSES=str(len(extra_args)), JAX_PROCESS_ID=str(index))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "transformer.train", f"--config={config_path}",
         f"--workdir={workdir}", "--distributed", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def kill_all(procs: list[subprocess.Popen]) -> None:
  for proc in procs:  # no orphans on failure or timeout
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def train_two_processes(config_path: str, workdir: str, steps: int) -> list[str]:
  """Runs `transformer.train --distributed` as processes 0 and 1; returns their outputs."""
  procs = start_processes(config_path, workdir, [[f"--config.num_train_steps={steps}"]] * 2)
  try:
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
  finally:
    kill_all(procs)
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-4000:]
  return outputs


def test_two_processes_match_one_process_and_resume(tiny_config, workdir_for, tmp_path):
  config = two_process_config(tiny_config)
  workdir = workdir_for(config, "two_processes")  # holds the trained spm.model; corpus prepared
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  experiment = os.path.join(ROOT, "tests", "training", "json_experiment.py")

  outputs = train_two_processes(f"{experiment}:{config_path}", workdir, steps=5)
  assert "starting from scratch" in outputs[0] and "starting from scratch" in outputs[1]
  assert "jit over mesh data 1 × fsdp 4 × tensor 1 (4 devices, 2 processes)" in outputs[0]
  outputs = train_two_processes(f"{experiment}:{config_path}", workdir, steps=7)
  for output in outputs:
    assert "resuming from the workdir's checkpoint at step 5" in output, output[-3000:]
  assert "sample 1" in outputs[0]  # params gathered from both processes for decoding
  # Params are split over both processes: each wrote its own shards of the checkpoint.
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(
      os.listdir(os.path.join(workdir, "checkpoints", "5", "params")))
  logged = {r["step"]: r for r in writer.read_jsonl(workdir) if r["split"] == "train"}
  assert sorted(logged) == list(range(1, 8))

  # One process, one device, the same global batches: process 0's rows, then process 1's.
  tokenizer = pipeline.load_tokenizer_for(config.data, tokenizer_path(workdir))
  reference = ml_collections.ConfigDict(config.to_dict())
  reference.parallelism.update(data=-1, fsdp=1)
  parts = assemble(reference, jax.devices()[:1])
  state, rng = parts.init()
  expected, _ = parallel_driver.train(
      parts, state, rng, parallel_driver.global_batches(config, tokenizer, 7, process_count=2))
  for name in ("loss", "grad_norm"):
    got, want = [logged[s][name] for s in range(1, 8)], [r[name] for r in expected]
    difference = parallel_driver.max_difference(got, want) / max(want)
    print(f"two processes vs one device, steps 1-7: max relative {name} difference "
          f"{difference:.2e}")
    # Params drift apart by float rounding over 7 Adam steps; a scale error is a factor >= 2.
    tolerance = TOLERANCE if name == "loss" else GRAD_NORM_TOLERANCE
    assert difference < tolerance, (name, got, want)


@pytest.mark.slow
def test_two_processes_start_from_a_one_process_run(tiny_config, workdir_for, tmp_path):
  from transformer.training.loop import run
  pretrain = tiny_config("lm")
  pretrain.update(num_train_steps=2, num_samples=0)
  pretrained = workdir_for(pretrain, "one_process")
  run(pretrain, pretrained, print_fn=lambda line: None)  # params on one device

  config = two_process_config(tiny_config)  # params split over both processes' devices
  config.update(stage="finetune", init_from=pretrained, num_samples=0,
                checkpoint_every_steps=2, eval_every_steps=2)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  experiment = os.path.join(ROOT, "tests", "training", "json_experiment.py")
  outputs = train_two_processes(f"{experiment}:{config_path}", str(tmp_path / "finetune"), steps=2)
  for output in outputs:
    assert f"initialising from init_from={pretrained} (step 2): restored" in output, output[-3000:]
    assert "step 2/2" in output


def test_a_failing_process_ends_the_others_with_its_message(tiny_config, workdir_for, tmp_path):
  config = two_process_config(tiny_config)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  experiment = os.path.join(ROOT, "tests", "training", "json_experiment.py")
  missing = str(tmp_path / "no_such_run")
  # Process 1 alone is given a bad init_from: it fails while process 0 goes on and waits for it.
  procs = start_processes(f"{experiment}:{config_path}", workdir_for(config),
                          [[], [f"--config.init_from={missing}"]])
  ended = [None, None]
  try:
    deadline = time.monotonic() + 240
    while None in ended and time.monotonic() < deadline:
      for index, proc in enumerate(procs):
        if ended[index] is None and proc.poll() is not None:
          ended[index] = time.monotonic()
      time.sleep(0.1)
    outputs = [proc.communicate(timeout=10)[0] for proc in procs]
  finally:
    kill_all(procs)
  message = f"config.init_from={missing!r} is not a training workdir (no config.json)"
  assert procs[1].returncode == 2 and f"error: {message}" in outputs[1], outputs[1][-3000:]
  assert procs[0].returncode == 1, outputs[0][-3000:]
  assert f"error: process 1 failed: {message}" in outputs[0], outputs[0][-3000:]
  assert "Traceback" not in outputs[0] + outputs[1]
  print(f"process 0 ended {ended[0] - ended[1]:.1f} s after process 1")
  assert ended[0] - ended[1] < 30


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tiny_config, workdir_for, tmp_path):
  config = two_process_config(tiny_config)
  config.update(num_train_steps=200, log_every_steps=1, eval_every_steps=200,
                checkpoint_every_steps=100, num_samples=0, stop_check_every_steps=5)
  workdir = workdir_for(config)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  experiment = os.path.join(ROOT, "tests", "training", "json_experiment.py")
  procs = start_processes(f"{experiment}:{config_path}", workdir, [[], []])
  try:
    deadline = time.monotonic() + 240
    while not any(r["step"] >= 3 for r in writer.read_jsonl(workdir)):
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # process 0 gets nothing: they agree at a step
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
  finally:
    kill_all(procs)
  stops = [[line for line in output.splitlines() if line.startswith("stopped by SIGTERM")]
           for output in outputs]
  assert [p.returncode for p in procs] == [0, 0], outputs[1][-3000:]
  assert len(stops[0]) == 1 and stops[0] == stops[1], stops  # the same step on both
  step = int(stops[0][0].split(" at step ")[1].split(":")[0])
  assert step % 5 == 0 and os.listdir(os.path.join(workdir, "checkpoints")) == [str(step)]


# ------------------------------------------------------------------------------ MFU

def logged_mfu(workdir: str) -> list[tuple[float, float]]:
  """(mfu, steps_per_second) of every train record of a run."""
  return [(r["mfu"], r["steps_per_second"]) for r in writer.read_jsonl(workdir)
          if r["split"] == "train"]


@pytest.mark.slow
def test_mfu_has_one_definition_on_one_and_on_eight_devices(tiny_config, workdir_for, tmp_path):
  from transformer.training.loop import run
  config = tiny_config("lm")
  config.global_batch_size = 8
  config.num_train_steps = config.log_every_steps = 3
  step_flops = assemble(config).flops_per_step()  # of the global batch, whatever the devices
  one = workdir_for(config, "one_device")
  run(config, one, print_fn=lambda line: None)

  config.parallelism.data = 8
  eight = workdir_for(config, "eight_devices")
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  result = subprocess.run(
      [sys.executable, "-m", "transformer.train",
       f"--config=tests/training/json_experiment.py:{config_path}", f"--workdir={eight}"],
      cwd=ROOT, env=subprocess_env(8), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "jit over mesh data 8" in result.stdout
  for workdir, devices in ((one, 1), (eight, 8)):
    (mfu, steps_per_second), = logged_mfu(workdir)
    expected = step_flops * steps_per_second / (config.peak_flops_per_device * devices)
    np.testing.assert_allclose(mfu, expected, rtol=1e-9)
