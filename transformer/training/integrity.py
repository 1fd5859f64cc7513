"""Checksums of saved checkpoints, their verification, and setting damaged steps aside.

Every step folder `checkpoints/<step>/` holds `checksums.json`: the size and sha256 of each
file in its item folders (params/, train/, data/, ...). `checkpoints.CheckpointManager` writes
it into Orbax's temporary folder just before Orbax renames that folder to the step, so the
checksums are part of the atomic save. The step folder's own top-level files are Orbax's
bookkeeping (rewritten when the save commits) and are not covered.

On restore `verify` names the first problem of a step: an empty or partial folder, a file
missing, truncated or changed. `latest_good_step` walks the steps from the latest down,
moves each damaged one to `<workdir>/checkpoints_set_aside/<step>-<reason>` (never deleted;
outside `checkpoints/`, so Orbax never sees it) with one line each, and returns the first
good step. A finalized step without checksums (written before they existed) is used
unverified, with a warning.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable

CHECKSUM_FILE = "checksums.json"
SET_ASIDE_DIR = "checkpoints_set_aside"
# Files Orbax writes at the top of a finalized step folder (any one marks the save complete).
_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Problem:
  """What is wrong with a step: `slug` names its set-aside folder, `text` the one-line report."""
  slug: str
  text: str


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _item_files(step_dir: str) -> list[str]:
  """Paths (relative to `step_dir`, '/'-separated, sorted) of the files in its item folders."""
  files = []
  for item in sorted(os.listdir(step_dir)):
    top = os.path.join(step_dir, item)
    if not os.path.isdir(top):
      continue
    for root, _, names in os.walk(top):
      files += [os.path.relpath(os.path.join(root, n), step_dir).replace(os.sep, "/")
                for n in names]
  return sorted(files)


def checksums(step_dir: str) -> dict[str, list]:
  """{relative path: [size in bytes, sha256 hex]} of every file in the item folders."""
  return {rel: [os.path.getsize(os.path.join(step_dir, rel)), _sha256(os.path.join(step_dir, rel))]
          for rel in _item_files(step_dir)}


def write_checksums(step_dir: str) -> None:
  """Writes `step_dir/checksums.json` (atomically: a temporary file, then a rename)."""
  path = os.path.join(step_dir, CHECKSUM_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({"algorithm": "sha256", "files": checksums(step_dir)}, f, indent=1)
  os.replace(path + ".tmp", path)


def has_checksums(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, CHECKSUM_FILE))


def verify(step_dir: str) -> Problem | None:
  """The first problem of the step folder `step_dir`, or None if it is intact (or unverifiable
  but finalized: see `has_checksums`)."""
  if not os.path.isdir(step_dir):
    return Problem("missing", "the folder is missing")
  entries = os.listdir(step_dir)
  if not entries:
    return Problem("empty", "the folder is empty")
  if not has_checksums(step_dir):
    if any(marker in entries for marker in _ORBAX_MARKERS):
      return None
    return Problem("incomplete",
                   f"the folder is incomplete (no {CHECKSUM_FILE}, no Orbax metadata)")
  try:
    with open(os.path.join(step_dir, CHECKSUM_FILE)) as f:
      expected = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return Problem("unreadable", f"{CHECKSUM_FILE} is unreadable ({e})")
  if not expected:
    return Problem("empty", f"{CHECKSUM_FILE} lists no files")
  for rel, (size, digest) in sorted(expected.items()):
    path = os.path.join(step_dir, rel)
    if not os.path.isfile(path):
      return Problem("missing-file", f"{rel} is missing")
    actual = os.path.getsize(path)
    if actual != size:
      slug = "truncated" if actual < size else "size-mismatch"
      return Problem(slug, f"{rel} has {actual} bytes, {size} when saved")
    if _sha256(path) != digest:
      return Problem("checksum-mismatch", f"{rel} does not match its checksum")
  return None


def steps(directory: str) -> list[int]:
  """The step folders (integer names) in a checkpoints directory, latest first."""
  if not os.path.isdir(directory):
    return []
  return sorted((int(name) for name in os.listdir(directory)
                 if name.isdigit() and os.path.isdir(os.path.join(directory, name))), reverse=True)


def set_aside_dir(directory: str) -> str:
  """Where damaged steps of the checkpoints directory `directory` go (beside it)."""
  return os.path.join(os.path.dirname(os.path.abspath(directory)), SET_ASIDE_DIR)


def set_aside(directory: str, step: int, problem: Problem) -> str:
  """Moves `directory/<step>` to `checkpoints_set_aside/<step>-<slug>[-n]`; returns the new path."""
  target_dir = set_aside_dir(directory)
  os.makedirs(target_dir, exist_ok=True)
  target, n = os.path.join(target_dir, f"{step}-{problem.slug}"), 1
  while os.path.exists(target):
    n += 1
    target = os.path.join(target_dir, f"{step}-{problem.slug}-{n}")
  shutil.move(os.path.join(directory, str(step)), target)
  return target


def report(step: int, problem: Problem, where: str | None) -> str:
  """The one line about a damaged step: what is wrong and where it went (None: left in place)."""
  fate = f"moved to {where}" if where else "left in place (the workdir is in use by another run)"
  return f"checkpoint {step} is damaged ({problem.text}): {fate}"


def latest_good_step(directory: str, print_fn: Callable[[str], None], *,
                     may_move: bool = True) -> int | None:
  """The latest intact step of `directory`; damaged later ones are set aside (if `may_move`,
  else skipped) with one line each through `print_fn`. None if no step is intact."""
  for step in steps(directory):
    step_dir = os.path.join(directory, str(step))
    problem = verify(step_dir)
    if problem is None:
      if not has_checksums(step_dir):
        print_fn(f"warning: checkpoint {step} has no {CHECKSUM_FILE} (saved before checksums "
                 "existed): using it unverified")
      return step
    print_fn(report(step, problem, set_aside(directory, step, problem) if may_move else None))
  return None
