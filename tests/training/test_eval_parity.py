"""Two processes on loopback evaluate the whole split (eval_steps=0) in step and finish.

The validation split has 7 records, 2 of them over-long: sharded before the over-long filter,
process 0 would get 2 eval batches and process 1 one, and process 0's second eval step would
wait forever for its peer. Every process runs the same eval batches, so both finish, and the
eval sums (reduced over both processes) count every target token of the split exactly once.
"""

import os
import re
import subprocess
import sys

import portpicker

from transformer.data import pipeline
from transformer.data.builders import stdlib_corpus
from transformer.training.config import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VALIDATION = ("first", "second", "third", "long " * 200, "fourth", "long " * 300, "fifth")


def write_files(directory) -> str:
  """train.tsv (words of the json package's docstrings) and validation.tsv; returns the file
  pattern."""
  sentences = [ex["target"].split()
               for ex in stdlib_corpus.corpus_examples("summarize", ("json",))["train"]]
  # Short: they fit 32 / 8 tokens.
  lines = [f"{' '.join(words[:6])}\t{words[0]}" for words in sentences]
  (directory / "train.tsv").write_text("\n".join(lines * 4) + "\n")
  (directory / "validation.tsv").write_text("".join(f"{text}\tok\n" for text in VALIDATION))
  return str(directory / "{split}.tsv")


def run_config(file_pattern: str):
  """A d_model 16 encoder-decoder, one train step of 4 rows over 4 devices, the whole split
  evaluated."""
  c = default_config()
  c.stage = "finetune"
  c.data.update(source="files", name="", task="seq2seq", file_pattern=file_pattern, seq_len=32,
                targets_len=8, vocab_size=400, spm_model_type="bpe", num_sentinels=0,
                spm_character_coverage=0.9995)
  c.model.update(architecture="encoder_decoder", d_model=16, num_heads=2, d_ff=32,
                 num_encoder_layers=1, num_decoder_layers=1, max_len=32)
  c.update(global_batch_size=4, num_train_steps=1, log_every_steps=1, eval_every_steps=1,
           eval_steps=0, checkpoint_every_steps=1, keep_checkpoints=1, num_samples=0,
           async_checkpoints=False, peak_flops_per_device=1e11)
  c.optimizer.warmup_steps = 1
  return c


def test_two_processes_run_the_same_eval_batches_with_eval_steps_0(tmp_path):
  config = run_config(write_files(tmp_path))
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  workdir = tmp_path / "run"
  port = portpicker.pick_unused_port()
  procs = []
  try:
    for index in range(2):
      env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
             "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(index)}
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "transformer.train",
           f"--config={os.path.join(ROOT, 'tests', 'training', 'json_experiment.py')}"
           f":{config_path}",
           f"--workdir={workdir}", "--distributed"],
          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]  # a hang ends here
  finally:
    for proc in procs:  # no orphans on failure or timeout
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-4000:]

  tokenizer = pipeline.load_tokenizer_for(config.data, str(workdir))
  batches = list(pipeline.make_dataset(config.data, "validation", global_batch_size=4, seed=0,
                                       train=False, process_index=0, process_count=1,
                                       tokenizer=tokenizer))
  assert len(batches) == 2  # 5 records fit: a full batch and one with 3 filler rows
  expected = sum(int((b["targets_segmentation"] > 0).sum()) for b in batches)
  for output in outputs:
    counted = [float(t) for t in re.findall(r"eval at step \d+: .*tokens ([\d.]+)", output)]
    assert counted == [expected, expected], output[-3000:]
