"""TFDS catalog datasets by name, read as array_record data sources (no TensorFlow).

Each entry names the record kind and which features hold its fields, in the
order of `local_files.KIND_FIELDS` (documents: text; pairs: inputs, targets).
Translation pairs go English -> German, as in the paper. Prepare a catalog
dataset once, where TensorFlow and the network are available, with
`tfds build NAME --file_format=array_record --data_dir=DIR`; tests use
`tfds.testing.mock_data` and never download.
"""


import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  """How to read one catalog dataset: record kind, feature per field, module that registers the
  builder."""

  kind: str
  features: tuple[str, ...]
  module: str


CATALOG = {
    "wmt14_translate/de-en": CatalogEntry("pairs", ("en", "de"),
                                          "tensorflow_datasets.translate.wmt14"),
    "wmt_t2t_translate/de-en": CatalogEntry("pairs", ("en", "de"),
                                            "tensorflow_datasets.translate.wmt_t2t"),
    "lm1b": CatalogEntry("documents", ("text",), "tensorflow_datasets.text.lm1b"),
    "c4/en": CatalogEntry("documents", ("text",), "tensorflow_datasets.text.c4"),
}


def catalog_source(name: str, split: str, data_dir: str | None) -> Sequence[Any]:
  """The array_record data source of split `split` of catalog dataset `name` (already prepared)."""
  # here, not at the top: the table above is read by config checks
  import tensorflow_datasets as tfds

  if name not in CATALOG:
    raise ValueError(f"name: unknown TFDS dataset {name!r}, expected one of {sorted(CATALOG)}")
  importlib.import_module(CATALOG[name].module)  # Registration is lazy.
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError,
          NotImplementedError) as e:
    raise ValueError(
        f"name: TFDS dataset {name!r} split {split!r} is not prepared in "
        f"data_dir={data_dir!r}; run "
        f"`tfds build {name} --file_format=array_record --data_dir=...` first ({e})"
    ) from e
