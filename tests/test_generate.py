"""The generate command: loading a workdir, reading prompts, one output per prompt (in this process
from its flags, and in a subprocess with the slow tests)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import app, flags
from absl import logging as absl_logging

from tests.decoding.conftest import init_params, tiny_config
from tests.decoding.test_prompts import train_tokenizer
from transformer import decoding
from transformer.generate import load_for_generation, one_line, read_prompts
from transformer.generate import main as generate_main
from transformer.training import integrity


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir as the trainer writes it: config.json, spm.model, checkpoints/<step>/params."""
  workdir = tmp_path_factory.mktemp("run")
  tokenizer = train_tokenizer(workdir, byte_fallback=True)
  (workdir / "spm_True.model").rename(workdir / "spm.model")
  config = tiny_config("encoder_decoder", vocab_size=tokenizer.get_piece_size(), max_len=24)
  model = {k: v for k, v in vars(config).items() if k not in ("vocab_size", "decode")}
  (workdir / "config.json").write_text(json.dumps(
      {"model": model, "data": {"vocab_size": config.vocab_size}}))
  params = init_params(config)
  with ocp.CheckpointManager(str(workdir / "checkpoints")) as manager:
    manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
    manager.wait_until_finished()
  integrity.write_checksums(str(workdir / "checkpoints" / "7"))  # as the trainer's saves do
  return workdir, config, params


def test_load_for_generation(workdir):
  path, config, params = workdir
  loaded_config, loaded_params, tokenizer = load_for_generation(str(path))
  assert loaded_config == config.eval()
  jax.tree.map(np.testing.assert_array_equal, loaded_params, params)
  assert tokenizer.vocab_size == config.vocab_size


def test_load_for_generation_names_a_missing_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json in .*: not a training workdir"):
    load_for_generation(str(tmp_path))


def test_one_output_per_prompt(workdir):
  config, params, tokenizer = load_for_generation(str(workdir[0]))
  prompts = ["the fox", "def add(a, b): return a + b", "print 😀"]
  outputs = decoding.generate_texts(config, params, tokenizer, prompts, batch_size=2,
                                    method="beam", beam_size=2, max_new_tokens=5)
  assert len(outputs) == 3 and all(isinstance(text, str) for text in outputs)


def test_batch_size_does_not_change_the_outputs(workdir):
  config, params, tokenizer = load_for_generation(str(workdir[0]))
  # Two long prompts (24 tokens) and two short ones (6): batches of 1 and of 2 drop their own
  # shared padding, so the same prompt is decoded at widths 6 and 24 (one compile per width).
  prompts = ["print the sum of two numbers", "the dog", "the sum", "print the sum of the numbers"]
  outputs = {size: decoding.generate_texts(config, params, tokenizer, prompts, batch_size=size,
                                           method="greedy", max_new_tokens=6) for size in (1, 2, 4)}
  assert len(outputs[4]) == 4 and len(set(outputs[4])) > 1
  assert outputs[1] == outputs[2] == outputs[4]


def test_read_prompts(tmp_path, monkeypatch):
  assert read_prompts("one prompt", None) == ["one prompt"]
  path = tmp_path / "prompts.txt"
  path.write_text("first\nsecond\n")
  assert read_prompts(None, str(path)) == ["first", "second"]
  monkeypatch.setattr(sys, "stdin", open(path))
  assert read_prompts(None, None) == ["first", "second"]


def run_main(*args: str) -> None:
  """transformer.generate.main under the given command-line flags, in this process (fast)."""
  verbosity = absl_logging.get_verbosity()
  try:
    generate_main([flags.FLAGS(["generate", *args])[0]])
  finally:
    flags.FLAGS.unparse_flags()
    absl_logging.set_verbosity(verbosity)


def test_command_line_prints_one_line_per_prompt(workdir, tmp_path, capsys):
  path, _, _ = workdir
  prompts = ["the fox", "def add(a, b): return a + b", "print the sum"]
  (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
  run_main(f"--workdir={path}", f"--prompts_file={tmp_path / 'prompts.txt'}", "--method=beam",
           "--beam_size=2", "--max_new_tokens=5", "--batch_size=2")
  config, params, tokenizer = load_for_generation(str(path))
  expected = decoding.generate_texts(config, params, tokenizer, prompts, batch_size=2,
                                     method="beam", beam_size=2, max_new_tokens=5)
  assert capsys.readouterr().out.splitlines() == [one_line(text) for text in expected]
  run_main(f"--workdir={path}", "--prompt=the fox", "--method=sample", "--top_k=5", "--seed=3",
           "--max_new_tokens=4")
  sampled = decoding.generate_texts(config, params, tokenizer, ["the fox"], seed=3, method="sample",
                                    top_k=5, max_new_tokens=4)
  assert capsys.readouterr().out.splitlines() == [one_line(sampled[0])]


def test_command_line_names_a_bad_workdir_and_an_empty_prompt(workdir, tmp_path):
  with pytest.raises(app.UsageError, match=f"--workdir={tmp_path}: no config.json"):
    run_main(f"--workdir={tmp_path}", "--prompt=x")
  with pytest.raises(app.UsageError, match="prompt 0 is empty"):
    run_main(f"--workdir={workdir[0]}", "--prompt= ")


@pytest.mark.slow
def test_command_line(workdir):
  result = subprocess.run(
      [sys.executable, "-m", "transformer.generate", f"--workdir={workdir[0]}",
       "--method=sample", "--top_k=5", "--max_new_tokens=4"],
      input="the fox\nthe dog\n", capture_output=True, text=True, check=True)
  assert len(result.stdout.splitlines()) == 2


def test_outputs_print_as_one_line_each():
  text = "a\nb\rc\x0bd\u2028e"
  assert len(one_line(text).splitlines()) == 1
  assert one_line(text) == "a\\nb\\rc\\x0bd\\u2028e"


def test_jsonl_prompts_may_hold_line_breaks(tmp_path, monkeypatch):
  prompts = ["def add(a, b):\n    return a + b", "class Box:\r\n    pass", "one line"]
  path = tmp_path / "prompts.jsonl"
  path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts) + "\n")
  assert read_prompts(None, str(path)) == prompts
  monkeypatch.setattr(sys, "stdin", open(path))
  assert read_prompts(None, None, jsonl=True) == prompts
  (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2: expected an object \{"prompt": "..."\}'):
    read_prompts(None, str(tmp_path / "bad.jsonl"))
  (tmp_path / "broken.jsonl").write_text('{"prompt": "a"\n')
  with pytest.raises(ValueError, match=r"broken.jsonl:1: not JSON"):
    read_prompts(None, str(tmp_path / "broken.jsonl"))


def generate_command(*args: str, **kwargs) -> subprocess.CompletedProcess:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, "-m", "transformer.generate", *args], cwd=root,
                        env={**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"},
                        capture_output=True, text=True, timeout=300, **kwargs)


def test_the_command_reads_jsonl_and_prints_no_library_warnings(workdir, tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text(json.dumps({"prompt": "def f(x):\n    return x"}) + "\n"
                  + json.dumps({"prompt": "the fox"}) + "\n")
  result = generate_command(f"--workdir={workdir[0]}", f"--prompts_file={path}",
                            "--max_new_tokens=4")
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()) == 2
  assert "read only" not in result.stderr and "WARNING" not in result.stderr, result.stderr
  assert not result.stderr.strip(), result.stderr  # nothing at all on stderr


@pytest.mark.parametrize("args, message", [
    (["--promt=x"], "error: Unknown command line flag 'promt'"),
    (["--method=bogus"], "error: flag --method=bogus: value should be one of <greedy|beam|sample>"),
    (["--step=99", "--prompt=x"], "error: --workdir=WORKDIR: no checkpoint at step 99 in"),
    (["--prompt= "], "error: prompt 0 is empty"),
])
def test_usage_errors_are_one_line(workdir, args, message):
  result = generate_command(f"--workdir={workdir[0]}", *args)
  assert result.returncode == 2 and result.stdout == ""
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message.replace("WORKDIR", str(workdir[0]))), (
      result.stderr)
