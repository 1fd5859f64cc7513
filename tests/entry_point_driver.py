"""Runs entry points as `python -m <module> <args>` does, many times from one process (tests).

  python tests/entry_point_driver.py CASES.json RESULTS.json

CASES.json is a list of {'module': 'transformer.train', 'args': [...], 'cwd': dir, 'stdin': text};
RESULTS.json receives, per case, {'status', 'stdout', 'stderr', 'seconds'}. The heavy
imports (jax, flax, Orbax, grain, TFDS) happen once, here; each case then runs in a forked
child with its own argv, working directory and file descriptors 0-2, executing the module
as `__main__` (runpy), so its exit status and output are what a user of the command sees,
in a fraction of a second instead of a fresh interpreter's several seconds. No jax backend
is started before the fork (only the children that get that far start one).
"""

import json
import os
import runpy
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_TIMEOUT = 120.0


def preload() -> None:
  """The libraries every entry point imports (not the entry point modules: they define flags)."""
  sys.path.insert(0, ROOT)
  import transformer.data.builders.stdlib_corpus  # noqa: F401
  import transformer.decoding  # noqa: F401
  import transformer.models.ngram  # noqa: F401
  import transformer.training.loop  # noqa: F401
  import transformer.walkthrough  # noqa: F401


def child(case: dict, out_path: str, err_path: str) -> None:
  """Runs one case in this (forked) process and exits with its status."""
  status = 0
  try:
    os.chdir(case.get("cwd") or ROOT)
    stdin = os.open(os.devnull, os.O_RDONLY)
    if case.get("stdin") is not None:
      with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(case["stdin"])
      stdin = os.open(f.name, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stdin = open(0, closefd=False)
    sys.argv = [case["module"], *case["args"]]
    sys.modules.pop(case["module"], None)  # e.g. transformer.data.pipeline: run afresh
    runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not isinstance(e.code, int) and e.code is not None:
      print(e.code, file=sys.stderr)
  except BaseException:  # (what the interpreter would print)
    traceback.print_exc()
    status = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def run_case(case: dict, scratch: str) -> dict:
  out_path, err_path = os.path.join(scratch, "out"), os.path.join(scratch, "err")
  sys.stdout.flush()
  sys.stderr.flush()
  start = time.perf_counter()
  pid = os.fork()
  if pid == 0:
    child(case, out_path, err_path)
  deadline = start + CASE_TIMEOUT
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    if time.perf_counter() > deadline:
      os.kill(pid, 9)
      os.waitpid(pid, 0)
      status = -1
      break
    time.sleep(0.02)
  code = os.waitstatus_to_exitcode(status) if status != -1 else -1
  with open(out_path) as out, open(err_path) as err:
    return {"status": code, "stdout": out.read(), "stderr": err.read(),
            "seconds": round(time.perf_counter() - start, 2)}


def main(cases_path: str, results_path: str) -> None:
  preload()
  with open(cases_path) as f:
    cases = json.load(f)
  with tempfile.TemporaryDirectory() as scratch:
    results = [run_case(case, scratch) for case in cases]
  with open(results_path, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:])
