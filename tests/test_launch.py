"""launch/: the Colab notebook run on CPU, shellcheck, and the launchers' dry runs.

The notebook runs every code cell except those tagged 'install' and 'drive' with a tiny
experiment; tpu_vm.sh and slurm_gpu.sbatch print the commands of a 2-worker example, and
tpu_vm.sh run against a fake gcloud issues exactly the commands its dry run printed.
"""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = sorted(p for p in glob.glob(os.path.join(LAUNCH, "*")) if p.endswith((".sh", ".sbatch")))
NOTEBOOK = os.path.join(LAUNCH, "colab_tpu.ipynb")
SKIPPED_TAGS = {"install", "drive"}  # cells that clone and pip install, or mount Google Drive
TRAIN = ["--config=experiments/quickstart.py", "--workdir=/mnt/shared/runs/q",
         "--config.global_batch_size=256"]


def bash(*args: str, env: dict | None = None, cwd: str = ROOT) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", *args], cwd=cwd, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, timeout=60)


def commands(stdout: str) -> list[list[str]]:
  """The printed command lines (comments dropped), each split as the shell would."""
  return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


# ------------------------------------------------------------------------------ shell scripts

def test_launch_scripts_are_there_and_executable():
  names = {os.path.basename(p) for p in SCRIPTS}
  assert {"local.sh", "local_multiprocess.sh", "slurm_gpu.sbatch", "tpu_vm.sh"} <= names
  assert "tpu_vm_pod.sh" not in names  # replaced by tpu_vm.sh
  assert all(os.access(p, os.X_OK) for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_n(script):
  result = bash("-n", script)
  assert result.returncode == 0, result.stderr


def test_shellcheck_passes_on_every_script():
  if shutil.which("shellcheck") is None:
    if os.environ.get("CI"):
      pytest.fail("shellcheck is not installed, and CI must run it: .ci/run installs it "
                  "(apt-get install shellcheck)")
    pytest.skip("shellcheck is not installed and CI is unset (.ci/run installs it in CI)")
  result = subprocess.run(["shellcheck", *SCRIPTS], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ tpu_vm.sh

def expected_tpu_vm_commands(gcloud: str, archive: str) -> list[list[str]]:
  tpu, where = ([gcloud, "compute", "tpus", "tpu-vm"],
                ["--zone=us-central2-b", "--project=my-project"])
  return [
      [*tpu, "describe", "my-pod", *where, "--format=value(state)"],
      [*tpu, "create", "my-pod", *where, "--accelerator-type=v4-16",
       "--version=tpu-ubuntu2204-base"],
      ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "|",
       "env", "COPYFILE_DISABLE=1", "tar", "-C", ROOT, "--null", "-T", "-", "-czf", archive],
      [*tpu, "scp", archive, "my-pod:transformer.tar.gz", *where, "--worker=all"],
      [*tpu, "ssh", "my-pod", *where, "--worker=all", "--command=" +
       "mkdir -p ~/transformer && tar -xzf ~/transformer.tar.gz -C ~/transformer && "
       "(command -v uv >/dev/null || [ -x ~/.local/bin/uv ] || "
       "curl -LsSf https://astral.sh/uv/install.sh | sh) && "
       'export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH" && '
       "([ -x ~/.venvs/transformer/bin/python ] || uv venv --python 3.11 ~/.venvs/transformer) && "
       'uv pip install --python ~/.venvs/transformer/bin/python -e "$HOME/transformer[tpu]"'],
      [*tpu, "ssh", "my-pod", *where, "--worker=all", "--command=cd ~/transformer && "
       "~/.venvs/transformer/bin/python -m transformer.train --distributed " + " ".join(TRAIN)],
  ]


POD = ["--name=my-pod", "--zone=us-central2-b", "--project=my-project", "--accelerator_type=v4-16"]


def test_tpu_vm_dry_run_prints_every_command(tmp_path):
  result = bash("launch/tpu_vm.sh", *POD, "--dry_run", *TRAIN, env={"TMPDIR": str(tmp_path)})
  assert result.returncode == 0, result.stderr
  archive = f"{tmp_path}/transformer-my-pod.tar.gz"
  assert commands(result.stdout) == expected_tpu_vm_commands("gcloud", archive)
  assert "# only if the describe above finds no TPU VM my-pod:" in result.stdout.splitlines()
  assert not os.path.exists(archive)  # nothing ran


def test_tpu_vm_dry_run_passes_awkward_flags_through_intact(tmp_path):
  flag = "--config.data.stdlib_packages=('email', 'json')"
  result = bash("launch/tpu_vm.sh", "--name=t", "--zone=z", "--dry_run", "--", TRAIN[0], TRAIN[1],
                flag, "--dry_run", env={"TMPDIR": str(tmp_path)})
  assert result.returncode == 0, result.stderr
  train = commands(result.stdout)[-1][-1]  # --command=<the workers' command line>
  assert (shlex.split(train.removeprefix("--command="))[-4:]
          == [TRAIN[0], TRAIN[1], flag, "--dry_run"])
  assert "# (no --accelerator_type: TPU VM t must exist; none is created)" in result.stdout


FAKE_GCLOUD = textwrap.dedent("""\
    #!/usr/bin/env python3
    # Records its arguments; 'describe' answers from $FAKE_TPU_STATE (empty: NOT_FOUND), 'scp'
    # keeps a copy of the archive it was given.
    import json, os, shutil, sys
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
      log.write(json.dumps(sys.argv[1:]) + "\\n")
    if "describe" in sys.argv:
      if not os.environ.get("FAKE_TPU_STATE"):
        sys.exit("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: my-pod was not found")
      print(os.environ["FAKE_TPU_STATE"])
    if "scp" in sys.argv:
      shutil.copy(sys.argv[5], os.environ["FAKE_GCLOUD_LOG"] + ".tar.gz")
    """)


@pytest.fixture
def fake_gcloud(tmp_path):
  path = tmp_path / "gcloud"
  path.write_text(FAKE_GCLOUD)
  path.chmod(0o755)
  log = tmp_path / "calls.jsonl"

  def run(*args: str, state: str = "") -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    log.unlink(missing_ok=True)
    result = bash("launch/tpu_vm.sh", *args, env={
        "GCLOUD": str(path), "FAKE_GCLOUD_LOG": str(log), "FAKE_TPU_STATE": state,
        "TMPDIR": str(tmp_path)})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, [[str(path), *call] for call in calls]
  return run


def test_tpu_vm_runs_what_its_dry_run_prints(fake_gcloud, tmp_path):
  result, calls = fake_gcloud(*POD, *TRAIN)  # no such TPU VM yet: created
  assert result.returncode == 0, result.stderr
  expected = expected_tpu_vm_commands(str(tmp_path / "gcloud"),
                                      f"{tmp_path}/transformer-my-pod.tar.gz")
  assert calls == [c for c in expected if c[0] != "git"]
  with tarfile.open(tmp_path / "calls.jsonl.tar.gz") as archive:  # the checkout, without .git
    names = set(archive.getnames())
  assert {"setup.py", "transformer/train.py", "launch/tpu_vm.sh",
          "experiments/quickstart.py"} <= names
  assert not any(name.startswith((".git/", "runs/")) for name in names)
  assert not os.path.exists(tmp_path / "transformer-my-pod.tar.gz")  # removed afterwards

  result, calls = fake_gcloud(*POD, *TRAIN, state="READY")  # reused: nothing created
  assert result.returncode == 0 and "reusing TPU VM my-pod" in result.stderr
  assert [c[4] for c in calls] == ["describe", "scp", "ssh", "ssh"]


@pytest.mark.parametrize("args, state, message", [
    (["--zone=z", *TRAIN], "", "error: --name=NAME is required"),
    (["--name=t", *TRAIN], "", "error: --zone=ZONE is required"),
    (["--name=t", "--zone=z"], "", "error: no --config=... among the training flags"),
    (["--name=t", "--zone=z", TRAIN[0]], "", "error: no --workdir=... among the training flags"),
    (["--name=t", "--zone=z", *TRAIN], "", "error: no TPU VM t in z (gcloud's message above): "
                                           "pass --accelerator_type=TYPE"),
    (["--name=t", "--zone=z", *TRAIN], "STOPPED", "error: TPU VM t in z is STOPPED, not READY"),
])
def test_tpu_vm_errors_are_clear(fake_gcloud, args, state, message):
  result, calls = fake_gcloud(*args, state=state)
  assert result.returncode == 2 and message in result.stderr, result.stderr
  assert all(call[4] == "describe" for call in calls)  # nothing copied, installed or trained


def test_tpu_vm_without_gcloud_says_so():
  result = bash("launch/tpu_vm.sh", "--name=t", "--zone=z", *TRAIN,
                env={"GCLOUD": "/nonexistent/gcloud"})
  assert result.returncode == 2
  assert ("error: gcloud not found ('/nonexistent/gcloud'): install the Google Cloud CLI"
          in result.stderr)


# ------------------------------------------------------------------------------ slurm_gpu.sbatch

def test_slurm_dry_run_prints_each_task_with_its_environment():
  train = ["--config=experiments/wmt14_ende.py:big", "--workdir=/shared/runs/big",
           "--config.parallelism.fsdp=8"]
  result = bash("launch/slurm_gpu.sbatch", "--dry_run", *train,
                env={"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"})
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == "# SLURM job 4242: 2 tasks on gpu07 gpu08; coordinator gpu07:24242"
  assert shlex.split(lines[1]) == [
      "srun", "--kill-on-bad-exit=1", "bash", "-c",
      'JAX_PROCESS_ID=$SLURM_PROCID exec python -m transformer.train --distributed "$@"',
      "bash", *train]
  assert lines[2:] == [
      "# task 0 on gpu07:",
      "JAX_COORDINATOR_ADDRESS=gpu07:24242 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 "
      "python -m transformer.train --distributed " + " ".join(train),
      "# task 1 on gpu08:",
      "JAX_COORDINATOR_ADDRESS=gpu07:24242 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 "
      "python -m transformer.train --distributed " + " ".join(train),
  ]


def test_slurm_dry_run_expands_node_lists_like_scontrol():
  result = bash("launch/slurm_gpu.sbatch", "--dry_run", *TRAIN[:2],
                env={"SLURM_JOB_NODELIST": "a100-[09-11,20],dgx1", "SLURM_JOB_ID": "7"})
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0] == (
      "# SLURM job 7: 5 tasks on a100-09 a100-10 a100-11 a100-20 dgx1; coordinator a100-09:20007")
  assert "# task 4 on dgx1:" in result.stdout and "JAX_PROCESS_ID=4 " in result.stdout


def test_slurm_outside_a_job_says_so():
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  result = subprocess.run(["bash", "launch/slurm_gpu.sbatch", *TRAIN], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert ("error: not inside a SLURM job (SLURM_JOB_ID is unset): submit it with sbatch"
          in result.stderr)


# ------------------------------------------------------------------------------ the notebook

def load_notebook():
  import nbformat
  return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs_and_tags_its_setup_cells():
  notebook = load_notebook()
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
  tagged = {tag: cell.source for cell in code for tag in cell.metadata.get("tags", [])}
  assert set(tagged) == SKIPPED_TAGS
  assert "REPO_URL" in tagged["install"] and '"pip", "install"' in tagged["install"]
  assert "from google.colab import drive" in tagged["drive"]
  assert notebook.metadata.kernelspec.name == "python3"


def test_notebook_runs_on_cpu_with_a_tiny_experiment(tmp_path, monkeypatch):
  """Every code cell but the install and Drive ones, as Run all would, on a 4-step experiment."""
  import nbclient
  notebook = load_notebook()
  notebook.cells = [cell for cell in notebook.cells
                    if not SKIPPED_TAGS & set(cell.metadata.get("tags", []))]
  for name, value in {"TRANSFORMER_NOTEBOOK_TINY": "1", "TRANSFORMER_REPO_DIR": ROOT,
                      "TRANSFORMER_RUNS_DIR": str(tmp_path / "runs"),
                      "TRANSFORMER_DATA_DIR": str(tmp_path / "tfds"), "JAX_PLATFORMS": "cpu",
                      "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}.items():
    monkeypatch.setenv(name, value)  # the kernel inherits this environment
  start = time.perf_counter()
  nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  elapsed = time.perf_counter() - start

  outputs = [(cell.source, output) for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.outputs]
  assert not [o for _, o in outputs if o.output_type == "error"]
  text = "\n".join(o.get("text", "") for _, o in outputs if o.output_type == "stream")
  images = [source for source, o in outputs if "image/png" in o.get("data", {})]
  assert "1 CPU device(s)" in text and "experiment tiny: d_model 32" in text
  assert "step 4/4" in text and "sample 1" in text  # trained through loop.run, samples printed
  assert sum("plot_curves" in source for source in images) == 1  # the inline training curves
  assert sum("plot_heatmaps" in source for source in images) == 4  # 3 attention blocks + positions
  assert text.count("  -> ") == 3  # three generations
  assert "predicted words:" in text  # the explain walk
  workdir = tmp_path / "runs" / "tiny"
  assert ({"curves.png", "metrics.jsonl", "checkpoints", "tensorboard", "explain"}
          <= set(os.listdir(workdir)))
  print(f"notebook ran in {elapsed:.0f} s")


# ------------------------------------------------------------------------------ local.sh

@pytest.mark.slow
def test_local_sh_from_a_fresh_clone_runs_the_quickstart(tmp_path):
  """README's quickstart through launch/local.sh in a fresh clone: venv, pip install, 300 steps."""
  clone = tmp_path / "clone"
  subprocess.run(["git", "clone", "--quiet", ROOT, str(clone)], check=True)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(PYTHON=sys.executable, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(tmp_path / "tfds"))
  result = subprocess.run(["bash", "launch/local.sh"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=3600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "step 300/300" in result.stdout and "sample 3" in result.stdout
  assert (clone / ".venv" / "bin" / "python").exists()
  workdir = clone / "runs" / "quickstart"
  assert (workdir / "curves.png").exists()
  evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [record["loss"] for record in evals if record["split"] == "eval"]
  assert losses[-1] < 0.6 * losses[0]  # README: 6.35 -> 2.84
  print(f"local.sh: eval loss {losses[0]:.2f} -> {losses[-1]:.2f}")
