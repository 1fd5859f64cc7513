"""Local files: formats, and the bad-data policy for each case."""

import json
import logging

import pytest

from transformer.data.builders import local_files


def _write(path, data):
  path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
  return path


def test_formats(tmp_path):
  _write(tmp_path / "a.txt", "doc one\nline two\n")
  _write(tmp_path / "b.txt", "doc two")
  assert local_files.read_records(str(tmp_path / "*.txt"), "documents") == [
      {"text": "doc one\nline two\n"}, {"text": "doc two"}]
  _write(tmp_path / "p.tsv", "x1\ty1\n\nx2\ty2\n")
  assert local_files.read_records(str(tmp_path / "*.tsv"), "pairs") == [
      {"inputs": "x1", "targets": "y1"}, {"inputs": "x2", "targets": "y2"}]
  rows = [{"prompt": "p", "chosen": "c", "rejected": "r", "extra": 1}]
  _write(tmp_path / "q.jsonl", "\n".join(json.dumps(r) for r in rows))
  assert local_files.read_records(str(tmp_path / "q.jsonl"), "preferences") == [
      {"prompt": "p", "chosen": "c", "rejected": "r"}]


def test_empty_files_are_skipped_and_logged(tmp_path, caplog):
  _write(tmp_path / "a.tsv", "")
  _write(tmp_path / "b.tsv", "  \n")
  _write(tmp_path / "c.tsv", "x\ty\n")
  with caplog.at_level(logging.INFO):
    assert local_files.read_records(str(tmp_path / "*.tsv"), "pairs") == [
        {"inputs": "x", "targets": "y"}]
  assert "skipping empty file" in caplog.text and "a.tsv" in caplog.text
  assert "skipped 2 empty files" in caplog.text


def test_invalid_utf8_names_file_and_line(tmp_path):
  path = _write(tmp_path / "bad.tsv", b"x\ty\nok\tfine\nbad\t\xff\xfe\n")
  with pytest.raises(ValueError, match=r"bad\.tsv:3: invalid UTF-8"):
    local_files.read_records(str(path), "pairs")


@pytest.mark.parametrize("name,content,kind,message", [
    ("p.tsv", "x\ty\nno tab here\n", "pairs", r"p\.tsv:2: expected 2 tab-separated fields"),
    ("p.tsv", "a\tb\tc\n", "pairs", r"p\.tsv:1: expected 2 tab-separated fields"),
    ("p.jsonl", '{"inputs": "x"}\n', "pairs", r"p\.jsonl:1: missing field 'targets'"),
    ("q.jsonl", '{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": 3}\n',
     "preferences", r"q\.jsonl:2: missing field 'chosen'"),
    ("q.jsonl", '{"prompt": "p",\n', "preferences", r"q\.jsonl:1: invalid JSON"),
    ("q.jsonl", '[1, 2]\n', "preferences", r"q\.jsonl:1: expected a JSON object"),
])
def test_rows_missing_fields_name_file_and_line(tmp_path, name, content, kind, message):
  path = _write(tmp_path / name, content)
  with pytest.raises(ValueError, match=message):
    local_files.read_records(str(path), kind)


def test_no_match_and_wrong_extension(tmp_path):
  with pytest.raises(ValueError, match="file_pattern: no file matches"):
    local_files.read_records(str(tmp_path / "*.tsv"), "pairs")
  path = _write(tmp_path / "a.txt", "text")
  with pytest.raises(ValueError, match=r"a\.txt: extension '.txt' cannot hold pairs"):
    local_files.read_records(str(path), "pairs")
