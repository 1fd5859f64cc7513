"""Local files by glob as a random-access record source (read and validated up front).

File formats, chosen by extension:
- `*.txt`:   one document per file ({'text'}); only for document tasks.
- `*.tsv`:   one pair per line, `inputs<TAB>targets`.
- `*.jsonl`: one JSON object per line with the fields of the record kind:
             documents {'text'}, pairs {'inputs', 'targets'},
             preferences {'prompt', 'chosen', 'rejected'}; extra fields ignored.

Bad-data policy (decided per case, so nothing fails deep inside the pipeline):
- empty file (or only whitespace):  skipped, counted in the log (warning); if every file
                                    is empty: rejected, ValueError naming `file_pattern`;
- blank line in a TSV/JSONL file:   skipped, counted in the log;
- invalid UTF-8:                    rejected: ValueError naming file and line;
- row missing a field (TSV without exactly one tab, JSONL missing a key or
  not a JSON object of strings):    rejected: ValueError naming file and line;
- no file matching the pattern:     rejected: ValueError naming `file_pattern`.
Over-long examples depend on the tokenizer and are skipped later by the
pipeline (see `transformer.data.pipeline`).

Everything is held in memory: meant for small and medium local data; write a
TFDS builder for a large corpus.
"""


import glob
import json
import os

from absl import logging

KIND_FIELDS = {
    "documents": ("text",),
    "pairs": ("inputs", "targets"),
    "preferences": ("prompt", "chosen", "rejected"),
}
EXTENSION_KINDS = {".txt": ("documents",), ".tsv": ("pairs",), ".jsonl": tuple(KIND_FIELDS)}


def _decode(path: str, data: bytes) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise ValueError(f"{path}:{line}: invalid UTF-8 ({e.reason} at byte {e.start})") from None


def _tsv_row(path: str, number: int, line: str) -> dict[str, str]:
  fields = line.split("\t")
  if len(fields) != 2:
    raise ValueError(f"{path}:{number}: expected 2 tab-separated fields (inputs, targets), "
                     f"got {len(fields)}")
  return {"inputs": fields[0], "targets": fields[1]}


def _jsonl_row(path: str, number: int, line: str, kind: str) -> dict[str, str]:
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{number}: invalid JSON: {e.msg}") from None
  if not isinstance(row, dict):
    raise ValueError(f"{path}:{number}: expected a JSON object with fields {KIND_FIELDS[kind]}")
  for field in KIND_FIELDS[kind]:
    if not isinstance(row.get(field), str):
      raise ValueError(f"{path}:{number}: missing field {field!r} (a string) for {kind}")
  return {field: row[field] for field in KIND_FIELDS[kind]}


def read_records(pattern: str, kind: str) -> list[dict[str, str]]:
  """All records of kind `kind` in the files matching `pattern` (sorted paths, file order).

  Raises ValueError for no match, a wrong extension, invalid UTF-8 or a row
  missing fields; skips (and logs the count of) empty files and blank lines.
  """
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
  if not paths:
    raise ValueError(f"file_pattern: no file matches {pattern!r}")
  records, empty_paths, blank_lines = [], [], 0
  for path in paths:
    extension = os.path.splitext(path)[1]
    if kind not in EXTENSION_KINDS.get(extension, ()):
      raise ValueError(f"{path}: extension {extension!r} cannot hold {kind}; expected one of "
                       f"{[e for e, k in EXTENSION_KINDS.items() if kind in k]}")
    with open(path, "rb") as f:
      text = _decode(path, f.read())
    if not text.strip():
      empty_paths.append(path)
      continue
    if extension == ".txt":
      records.append({"text": text})
      continue
    for number, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        blank_lines += 1
      elif extension == ".tsv":
        records.append(_tsv_row(path, number, line))
      else:
        records.append(_jsonl_row(path, number, line, kind))
  if not records:
    raise ValueError(f"file_pattern: the {len(paths)} file(s) matching {pattern!r} hold no "
                     f"records ({len(empty_paths)} empty, {blank_lines} blank lines)")
  for path in empty_paths:  # after the check: an error comes alone
    logging.warning("local files: skipping empty file %s", path)
  logging.info("local files %r: %d records from %d files; skipped %d empty files, %d blank lines",
               pattern, len(records), len(paths), len(empty_paths), blank_lines)
  return records
