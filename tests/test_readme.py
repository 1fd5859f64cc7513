"""Every `python -m transformer.<module> ...` command line of README.md names a module that runs
and flags that exist: each module is loaded as `__main__` in a subprocess (its main not run)
and every command's flags are parsed by that module's own parser (absl's flag registry, or
argparse), `--config.x.y=v` overrides included: a misspelt flag or config field fails here."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
COMMAND = re.compile(r"python -m (transformer(?:\.\w+)*)(.*)")
END = ("|", "&&", ";", "#", ">", "2>")


def code_texts(markdown: str) -> list[str]:
  """The code of a Markdown text: fenced blocks, 4-space indented lines and inline code spans,
  with backslash-continued lines joined."""
  texts, fenced, block, indented = [], False, [], []
  for line in markdown.splitlines():
    if indented and not (line.startswith("    ") and not fenced):
      texts.append("\n".join(indented))
      indented = []
    if line.lstrip().startswith("```"):
      if fenced:
        texts.append("\n".join(block))
      fenced, block = not fenced, []
    elif fenced:
      block.append(line)
    elif line.startswith("    "):
      indented.append(line)
    else:
      texts += re.findall(r"`([^`]+)`", line)
  if indented:
    texts.append("\n".join(indented))
  joined = []
  for text in texts:
    joined += re.sub(r"\s*\\\n\s*", " ", text).splitlines()
  return joined


def readme_commands() -> list[tuple[str, list[str]]]:
  """(module, its arguments) of every `python -m transformer.<module>` command in README.md."""
  with open(README) as f:
    lines = code_texts(f.read())
  commands = []
  for line in lines:
    for match in COMMAND.finditer(line):
      rest = match.group(2)
      try:
        tokens = shlex.split(rest, comments=True)
      except ValueError:  # quotes that open before `python -m` (a command inside bash -c '...')
        tokens = rest.split()
      args = []
      for token in tokens:
        if token in END or token.startswith(END[-2:]):
          break
        args.append(token)
      commands.append((match.group(1), args))
  return commands


def flag_tokens(args: list[str]) -> list[str]:
  """The `--flag[=value]` arguments, brackets of optional ones (`[--dry_run]`) removed."""
  return [arg.strip("[]") for arg in args if arg.strip("[]").startswith("--")]


def has_placeholder(args: list[str]) -> bool:
  """A synopsis (`--config=experiments/<file>.py`, `[--dry_run]`, `...`), not a runnable line."""
  return any("<" in arg or arg.startswith("[") or arg == "..." for arg in args)


# Loads a module as __main__ with absl's app.run and argparse's parse_args intercepted (so its
# main never runs), then parses each command's flags in a forked child with the module's parser.
CHECKER = r"""
import argparse, json, os, runpy, sys
from absl import app, flags
module, commands = sys.argv[1], json.loads(sys.argv[2])
parsers = []
class Stop(Exception):
  pass
def capture(self, args=None, namespace=None):
  parsers.append(self)
  raise Stop()
app.run = lambda main, *args, **kwargs: None
argparse.ArgumentParser.parse_args = capture
# config_flags.DEFINE_config_dict defines the override flags named in sys.argv when it runs
sys.argv = [module] + [token for tokens, _ in commands for token in tokens]
try:
  runpy.run_module(module, run_name="__main__", alter_sys=True)
except Stop:
  pass
parser = parsers[0] if parsers else None
known = set(flags.FLAGS) | ({o.lstrip("-") for a in parser._actions for o in a.option_strings}
                            if parser else set())
problems = []
for tokens, full in commands:
  for token in tokens:
    name = token[2:].split("=")[0]
    base = name.split(".")[0]
    if "<" in name:
      continue
    if base not in known and not (base.startswith("no") and base[2:] in known):
      problems.append(f"{module}: unknown flag --{name} in {tokens}")
  if not full:
    continue
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read)
    try:
      if parser:  # argparse: values and required arguments (names were checked above)
        parser.parse_known_args(tokens)
      else:  # config_flags reads --config.x.y overrides from sys.argv
        sys.argv = [module, *tokens]
        flags.FLAGS(sys.argv)
      os._exit(0)
    except BaseException as e:
      os.write(write, f"{module} {' '.join(tokens)}: {type(e).__name__}: {e}".encode()[:2000])
      os._exit(1)
  os.close(write)
  _, status = os.waitpid(pid, 0)
  message = os.read(read, 4000).decode()
  if status:
    problems.append(message or f"{module} {tokens}: exit status {status}")
print(json.dumps(problems))
"""


def modules() -> list[str]:
  return sorted({module for module, _ in readme_commands()})


def test_the_readme_commands_are_found():
  commands = readme_commands()
  assert len(commands) > 30
  assert {"transformer.train", "transformer.generate", "transformer.evaluate",
          "transformer.average", "transformer.export", "transformer.training.config"} <= set(
              modules())
  assert ("transformer.evaluate", ["--workdir=runs/quickstart", "--split=test"]) in commands


def test_the_extractor_joins_continuations_and_stops_at_shell_syntax():
  text = "```\npython -m transformer.train --a=1 \\\n    --b=2  # note\n```\n" \
         "and `python -m transformer.x --c | head` inline\n" \
         "    python -m transformer.y --d > out.json\n"
  found = []
  for line in code_texts(text):
    for match in COMMAND.finditer(line):
      found.append(match.group(0))
  assert found == ["python -m transformer.train --a=1 --b=2  # note",
                   "python -m transformer.x --c | head", "python -m transformer.y --d > out.json"]


@pytest.mark.parametrize("module", modules())
def test_every_readme_command_has_a_module_and_flags_that_exist(module):
  commands = [(flag_tokens(args), not has_placeholder(args))
              for name, args in readme_commands() if name == module]
  result = subprocess.run(
      [sys.executable, "-c", CHECKER, module, json.dumps(commands)], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  problems = json.loads(result.stdout.strip().splitlines()[-1])
  assert not problems, "\n".join(problems)


def test_the_checker_catches_a_misspelt_flag_and_config_field():
  commands = [(["--config=experiments/quickstart.py", "--config.optimizer.lerning_rate=1"], True),
              (["--dryrun"], False), (["--config=experiments/quickstart.py", "--dry_run"], True)]
  result = subprocess.run(
      [sys.executable, "-c", CHECKER, "transformer.train", json.dumps(commands)], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  problems = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(problems) == 2, problems
  assert "lerning_rate" in problems[0] and "unknown flag --dryrun" in problems[1]
