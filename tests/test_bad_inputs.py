"""Every bad input, at every entry point, is one line on stderr and exit status 2, early.

The table runs through `tests/entry_point_driver.py`: each case is the command a user types
(`python -m <module> <args>`), run in a forked child of one process that imported the
libraries once. Each case asserts exit status 2, exactly one line on stderr (`error: ...`,
no traceback), the words that name the problem, and, for the commands that train a
tokenizer or compile (train, ngram, the pipeline), that neither happened: no spm.model in
the case's workdir and no training output.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import orbax.checkpoint as ocp
import pytest

from tests.decoding.test_prompts import train_tokenizer
from tests.training.conftest import tiny_experiment
from transformer.models.registry import build_model
from transformer.training import checkpoints
from transformer.training.config import model_config
from transformer.training.state import init_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, GENERATE, EXPLAIN = "transformer.train", "transformer.generate", "transformer.explain"
NGRAM, BUILDERS = "transformer.ngram", "transformer.data.builders"
COMPARE = "transformer.compare_lms"
CMP = ["--config=experiments/compare_lms.py:tiny", "--config.run.data.data_dir={data}",
       "--workdir={workdir}"]
PIPELINE = "transformer.data.pipeline"
LM = ["--config=experiments/pretrain_lm.py:tiny", "--config.data.data_dir={data}"]
FILES = [*LM, "--config.data.source=files"]
RUN = ["--workdir={run}"]
NG = ["--workdir={workdir}", "--data.data_dir={data}"]

# (id, module, args, words the message must hold); {workdir} is the case's own fresh path.
CASES = [
    # train: flags and experiment files
    ("no-config", TRAIN, ["--workdir={workdir}"], "--config is required"),
    ("missing-experiment", TRAIN, ["--config=experiments/no_such.py", "--workdir={workdir}"],
     "No such file or directory: 'experiments/no_such.py'"),
    ("experiment-syntax-error", TRAIN, ["--config={tmp}/syntax.py", "--workdir={workdir}"],
     "syntax.py:2: SyntaxError"),
    ("experiment-raises", TRAIN, ["--config={tmp}/raises.py", "--workdir={workdir}"],
     "raises.py:4: ZeroDivisionError: division by zero"),
    ("experiment-import-fails", TRAIN, ["--config={tmp}/imports.py", "--workdir={workdir}"],
     "imports.py:1: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ("experiment-without-get-config", TRAIN, ["--config={tmp}/noget.py", "--workdir={workdir}"],
     "noget.py has no get_config(arg) function"),
    ("experiment-bad-argument", TRAIN, ["--config=experiments/wmt14_ende.py:huge",
                                        "--workdir={workdir}"], "got 'huge'"),
    ("no-workdir", TRAIN, LM, "--workdir is required"),
    ("unknown-flag", TRAIN, [*LM, "--workdir={workdir}", "--nosuchflag"], "nosuchflag"),
    ("unknown-field", TRAIN, [*LM, "--workdir={workdir}", "--config.optimizer.lerning_rate=1"],
     "unknown config field in --config.optimizer.lerning_rate"),
    ("wrong-type", TRAIN, [*LM, "--workdir={workdir}", "--config.num_train_steps=ten"],
     "--config.num_train_steps=ten"),
    # train: values
    ("unknown-stage", TRAIN, [*LM, "--workdir={workdir}", "--config.stage=distill"],
     "config.stage must be one of"),
    ("negative-learning-rate", TRAIN, [*LM, "--workdir={workdir}",
                                       "--config.optimizer.learning_rate=-1"],
     "config.optimizer.learning_rate must be > 0, got -1"),
    ("zero-learning-rate", TRAIN, [*LM, "--workdir={workdir}",
                                   "--config.optimizer.learning_rate=0"],
     "config.optimizer.learning_rate must be > 0"),
    ("beta2-above-1", TRAIN, [*LM, "--workdir={workdir}", "--config.optimizer.b2=1.5"],
     "config.optimizer.b2 must be in [0, 1)"),
    ("negative-warmup", TRAIN, [*LM, "--workdir={workdir}", "--config.optimizer.warmup_steps=-1"],
     "config.optimizer.warmup_steps"),
    ("zero-steps", TRAIN, [*LM, "--workdir={workdir}", "--config.num_train_steps=0"],
     "config.num_train_steps must be >= 1"),
    ("label-smoothing-1.5", TRAIN, [*LM, "--workdir={workdir}", "--config.label_smoothing=1.5"],
     "config.label_smoothing must be in [0, 1)"),
    ("batch-not-divisible", TRAIN, [*LM, "--workdir={workdir}", "--config.grad_accum_steps=3"],
     "must be divisible by config.grad_accum_steps (3)"),
    ("unknown-best-metric", TRAIN, [*LM, "--workdir={workdir}", "--config.best_metric=bleu"],
     "config.best_metric must be '' or an eval metric"),
    ("negative-time-limit", TRAIN, [*LM, "--workdir={workdir}", "--config.time_limit_seconds=-1"],
     "config.time_limit_seconds must be >= 0"),
    ("heads-do-not-divide", TRAIN, [*LM, "--workdir={workdir}", "--config.model.num_heads=3"],
     "must be divisible"),
    ("task-for-other-records", TRAIN, [*LM, "--workdir={workdir}", "--config.data.task=seq2seq"],
     "a task for documents"),
    ("vocabulary-too-small", TRAIN, [*LM, "--workdir={workdir}", "--config.data.vocab_size=100"],
     "vocab_size"),
    ("mesh-needs-more-devices", TRAIN, [*LM, "--workdir={workdir}", "--config.parallelism.data=2"],
     "must equal the device count (1)"),
    # train: splits, files and paths
    ("no-such-eval-split", TRAIN, [*LM, "--workdir={workdir}", "--config.eval_split=nosuch"],
     "config.eval_split='nosuch': stdlib_corpus/text has no such split"),
    ("empty-eval-split", TRAIN, [*LM, "--workdir={workdir}", "--config.eval_split="],
     "config.eval_split must name a split"),
    ("no-data-files", TRAIN, [*FILES, "--workdir={workdir}",
                              "--config.data.file_pattern={tmp}/none/{{split}}.txt"],
     "config.data.file_pattern: no file of split 'train'"),
    ("no-validation-file", TRAIN, [*FILES, "--workdir={workdir}",
                                   "--config.data.file_pattern={tmp}/only_train/{{split}}.txt"],
     "no file of split 'validation' (config.eval_split)"),
    ("all-data-files-empty", TRAIN, [*FILES, "--workdir={workdir}",
                                     "--config.data.file_pattern={tmp}/empty/{{split}}.txt"],
     "hold no records"),
    ("data-files-of-another-kind", TRAIN, [*FILES, "--workdir={workdir}",
                                           "--config.data.file_pattern={tmp}/pairs/*.tsv"],
     "extension '.tsv' cannot hold documents"),
    ("workdir-is-a-file", TRAIN, [*LM, "--workdir={tmp}/a_file"], "is a file, not a directory"),
    ("workdir-read-only", TRAIN, [*LM, "--workdir=/proc/transformer_run"],
     "--workdir='/proc/transformer_run' cannot be created (/proc is not writable)"),
    ("data-dir-is-a-file", TRAIN, ["--config=experiments/pretrain_lm.py:tiny",
                                   "--workdir={workdir}", "--config.data.data_dir={tmp}/a_file"],
     "config.data.data_dir="),
    ("init-from-not-a-run", TRAIN, [*LM, "--workdir={workdir}", "--config.init_from={tmp}"],
     "is not a training workdir (no config.json)"),
    ("init-from-without-checkpoints", TRAIN, [*LM, "--workdir={workdir}",
                                              "--config.init_from={no_checkpoints}"],
     "has no checkpoint"),
    ("workdir-of-another-model", TRAIN, [*LM, "--workdir={incompatible}"],
     "holds a run with an incompatible model config (d_model: 64 in the workdir, 32 now)"),
    ("workdir-in-use", TRAIN, [*LM, "--workdir={busy}"], "is in use by pid"),
    # generate
    ("generate-no-workdir", GENERATE, ["--prompt=x"], "--workdir"),
    ("generate-not-a-run", GENERATE, ["--workdir={tmp}", "--prompt=x"], "not a training workdir"),
    ("generate-unknown-method", GENERATE, [*RUN, "--method=nope"], "--method=nope"),
    ("generate-no-such-step", GENERATE, [*RUN, "--step=99", "--prompt=x"],
     "no checkpoint at step 99"),
    ("generate-empty-prompt", GENERATE, [*RUN, "--prompt="], "prompt 0 is empty"),
    ("generate-missing-prompts-file", GENERATE, [*RUN, "--prompts_file={tmp}/no_prompts.txt"],
     "No such file or directory"),
    ("generate-top-p-0", GENERATE, [*RUN, "--prompt=x", "--method=sample", "--top_p=0"],
     "top_p must be in (0, 1]"),
    ("generate-temperature-0", GENERATE, [*RUN, "--prompt=x", "--method=sample",
                                          "--temperature=0"], "temperature must be > 0"),
    ("generate-batch-size-0", GENERATE, [*RUN, "--prompt=x", "--batch_size=0"],
     "batch_size must be >= 1"),
    ("generate-extra-argument", GENERATE, [*RUN, "--prompt=x", "extra"], "unexpected arguments"),
    # explain
    ("explain-odd-width", EXPLAIN, ["--d_model=7", "--encoder_heads=1", "--decoder_heads=1"],
     "--d_model=7 must be even"),
    ("explain-heads-do-not-divide", EXPLAIN, ["--encoder_heads=4"], "--encoder_heads=4 must be"),
    ("explain-no-words", EXPLAIN, ["--inputs= "], "--inputs must contain at least one word"),
    ("explain-d-ff-0", EXPLAIN, ["--d_ff=0"], "--d_ff=0 must be >= 1"),
    ("explain-bad-integer", EXPLAIN, ["--seed=abc"], "--seed=abc"),
    ("explain-plot-dir-is-a-file", EXPLAIN, ["--plot_dir={tmp}/a_file"],
     "--plot_dir='{tmp}/a_file' is a file"),
    ("explain-plot-dir-read-only", EXPLAIN, ["--plot_dir=/proc/plots"], "cannot be created"),
    # ngram
    ("ngram-order-0", NGRAM, [*NG, "--order=0"], "--order must be >= 1, got 0"),
    ("ngram-not-lm", NGRAM, [*NG, "--data.task=seq2seq"], "--data.task must be 'lm'"),
    ("ngram-discount", NGRAM, [*NG, "--discount=1.5"], "--discount must be in (0, 1)"),
    ("ngram-eval-batches", NGRAM, [*NG, "--eval_batches=-1"], "--eval_batches must be >= 0"),
    ("ngram-workdir-is-a-file", NGRAM, ["--workdir={tmp}/a_file"], "is a file, not a directory"),
    ("ngram-no-data-files", NGRAM, [*NG, "--data.source=files",
                                    "--data.file_pattern={tmp}/none/{{split}}.txt"],
     "--data.file_pattern: no file of split 'train'"),
    ("ngram-no-validation-file", NGRAM, [*NG, "--data.source=files",
                                         "--data.file_pattern={tmp}/only_train/{{split}}.txt"],
     "no file of split 'validation'"),
    # compare_lms
    ("compare-no-config", COMPARE, ["--workdir={workdir}"], "--config is required"),
    ("compare-eval-subset", COMPARE, [*CMP, "--config.run.eval_steps=3"],
     "config.run.eval_steps must be 0"),
    ("compare-unknown-field", COMPARE, [*CMP, "--config.models.lstm.num_layers=3"],
     "num_layers"),
    ("compare-ngram-order", COMPARE, [*CMP, "--config.ngram_orders=(2,0)"],
     "config.ngram_orders must hold ints >= 1"),
    ("compare-workdir-is-a-file", COMPARE, [*CMP[:2], "--workdir={tmp}/a_file"],
     "is a file, not a directory"),
    # data builders
    ("builders-no-data-dir", BUILDERS, [], "the following arguments are required: --data_dir"),
    ("builders-unknown-argument", BUILDERS, ["--data_dir={workdir}", "--bogus"],
     "unrecognized arguments: --bogus"),
    ("builders-data-dir-is-a-file", BUILDERS, ["--data_dir={tmp}/a_file"], "is a file"),
    ("builders-data-dir-read-only", BUILDERS, ["--data_dir=/proc/tfds"], "cannot be created"),
    # pipeline statistics
    ("pipeline-seq-len-0", PIPELINE, [*NG, "--data.seq_len=0"], "--data.seq_len: got 0"),
    ("pipeline-batch-size-0", PIPELINE, [*NG, "--batch_size=0"], "--batch_size must be >= 1"),
    ("pipeline-workdir-is-a-file", PIPELINE, ["--workdir={tmp}/a_file"], "is a file"),
    ("pipeline-no-data-files", PIPELINE, [*NG, "--data.source=files",
                                          "--data.file_pattern={tmp}/none/*.txt"],
     "no file of split 'train'"),
    ("pipeline-unknown-source", PIPELINE, [*NG, "--data.source=web"], "--data.source"),
]
TRAINS_OR_COMPILES = (TRAIN, NGRAM, PIPELINE, COMPARE)


def write(path, text=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def make_inputs(tmp: str, data_dir: str) -> dict[str, str]:
  """The files the cases point at; returns the placeholders of CASES."""
  write(f"{tmp}/syntax.py", "def get_config(arg=None):\n  x = (\n")
  write(f"{tmp}/raises.py", "import ml_collections\n\ndef get_config(arg=None):\n  return 1 / 0\n")
  write(f"{tmp}/imports.py", "import no_such_module_xyz\n")
  write(f"{tmp}/noget.py", "x = 1\n")
  write(f"{tmp}/a_file", "not a directory\n")
  write(f"{tmp}/only_train/train.txt", "some text\n")
  write(f"{tmp}/empty/train.txt")
  write(f"{tmp}/empty/validation.txt", "  \n")
  write(f"{tmp}/pairs/train.tsv", "a\tb\n")
  os.makedirs(f"{tmp}/none", exist_ok=True)

  config = tiny_experiment(data_dir, "lm")
  run = f"{tmp}/run"  # a run for generate: config, tokenizer, a checksummed checkpoint
  tokenizer = train_tokenizer(pathlib.Path(tmp), byte_fallback=True)
  os.makedirs(run)
  shutil.move(f"{tmp}/spm_True.model", checkpoints.tokenizer_path(run))
  config.data.vocab_size = tokenizer.get_piece_size()
  checkpoints.write_config(run, config)
  params = init_params(build_model(model_config(config)), jax.random.PRNGKey(0))
  manager = checkpoints.CheckpointManager(checkpoints.checkpoint_dir(run),
                                          ocp.CheckpointManagerOptions())
  manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  manager.close()

  checkpoints.write_config(f"{tmp}/no_checkpoints", config)
  other = tiny_experiment(data_dir, "lm")
  other.model.d_model = 64
  checkpoints.write_config(f"{tmp}/incompatible", other)
  write(f"{tmp}/busy/lock", json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                        "started": "now"}))
  return {"tmp": tmp, "data": data_dir, "run": run, "no_checkpoints": f"{tmp}/no_checkpoints",
          "incompatible": f"{tmp}/incompatible", "busy": f"{tmp}/busy"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{case id: (args as run, result)}: every case through one entry_point_driver process."""
  tmp = str(tmp_path_factory.mktemp("bad_inputs"))
  names = make_inputs(tmp, str(tmp_path_factory.mktemp("tfds")))
  cases = []
  for case_id, module, args, _ in CASES:
    fields = {**names, "workdir": f"{tmp}/workdirs/{case_id}"}
    cases.append({"module": module, "args": [arg.format(**fields) for arg in args], "cwd": ROOT})
  cases_path, results_path = f"{tmp}/cases.json", f"{tmp}/results.json"
  write(cases_path, json.dumps(cases))
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "entry_point_driver.py"),
                  cases_path, results_path], env=env, check=True, timeout=900)
  with open(results_path) as f:
    return {c[0]: (case, result) for c, case, result in zip(CASES, cases, json.load(f))}, names


def test_the_table_covers_every_entry_point():
  assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
  assert {c[1] for c in CASES} == {TRAIN, GENERATE, EXPLAIN, NGRAM, BUILDERS, PIPELINE, COMPARE}


@pytest.mark.parametrize("case_id, module, args, words", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2_early(results, case_id, module, args, words):
  by_id, names = results
  case, result = by_id[case_id]
  shown = f"{module} {' '.join(case['args'])}\n{result['stderr']}{result['stdout'][-2000:]}"
  assert result["status"] == 2, shown
  lines = result["stderr"].splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), shown
  assert words.format(**names) in lines[0], shown
  if module in TRAINS_OR_COMPILES:  # failed before a tokenizer trained or anything compiled
    workdir = next((a.split("=", 1)[1] for a in case["args"] if a.startswith("--workdir=")), None)
    if workdir and os.path.isdir(workdir):
      assert "spm.model" not in os.listdir(workdir), shown
    assert "starting from scratch" not in result["stdout"] and "step " not in result["stdout"]
