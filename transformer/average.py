r"""Averages the last K checkpoints of a run (or the given steps) into a params-only checkpoint.

  python -m transformer.average --workdir=runs/wmt14_base --last=5       # the paper's base
  python -m transformer.average --workdir=runs/quickstart --steps=200,300

Writes DIR/averaged/step<last>-avg<K>/ (params/ and averaged.json with the steps), outside
checkpoints/ so that training never resumes from it; `generate`, `evaluate` and `export` load
it with --averaged=that folder (or average on the fly with --average_last=K). The mean is taken
in float32 (`training/averaging.py`). Usage errors are one line on stderr (exit status 2).
"""

from absl import flags

from transformer import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir.", required=True)
_LAST = flags.DEFINE_integer("last", 0, "Average the latest this many checkpoints.")
_STEPS = flags.DEFINE_list("steps", [], "Average the checkpoints of these steps, e.g. 200,300.")


def main(argv: list[str]) -> None:
  del argv
  from transformer.training import averaging

  if not all(s.isdigit() for s in _STEPS.value):
    cli.fail(f"--steps: expected checkpoint steps like 200,300, got {_STEPS.value}")
  try:
    steps = [int(s) for s in _STEPS.value]
    params, steps = averaging.average_checkpoints(_WORKDIR.value, last=_LAST.value, steps=steps)
  except (FileNotFoundError, ValueError) as e:
    cli.fail(f"--workdir={_WORKDIR.value}: {e}")
  path = averaging.save_average(_WORKDIR.value, params, steps)
  print(f"averaged the checkpoints of steps {steps} into {path}")


if __name__ == "__main__":
  cli.run(main)
