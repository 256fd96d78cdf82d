"""Exportable datasets: what ``/api/datasets/exportable`` lists and the export may read.

A dataset is a YAML file: the built-ins ship in this package, and plugins add
theirs under the data directory (``exportable_datasets/`` and
``plugins/exportable_datasets/``). Each file is parsed strictly; one that does
not parse or breaks a rule is skipped and logged, never half-used. The names
in a definition (table, columns) are the only SQL identifiers the export ever
writes into a statement, so each must be a plain identifier; a ``query`` is
run as a subquery on a read-only connection.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import cattrs
import yaml
from attrs import field, frozen
from twisted.logger import Logger

from ..bodies import _describe, make_converter
from ..calibration_files import _PlainLoader

log = Logger()

SUFFIX = ".yaml"
PLUGIN_DIRS = ("exportable_datasets", "plugins/exportable_datasets")
MAX_FILE_BYTES = 256 * 1024
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
EXPERIMENT_COLUMN = "experiment"
UNIT_COLUMN = "pioreactor_unit"


def _identifier(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and not IDENTIFIER.fullmatch(value):
        raise ValueError(f"{attribute.name}: {value!r} is not a plain SQL identifier (letters, digits, _)")


def _identifiers(instance: Any, attribute: Any, value: list[str]) -> None:
    for item in value:
        if not IDENTIFIER.fullmatch(item):
            raise ValueError(f"{attribute.name}: {item!r} is not a plain SQL identifier (letters, digits, _)")


def _app_only(instance: Any, attribute: Any, value: str) -> None:
    if value != "app":
        raise ValueError(f"source: only 'app' (the leader's database) is known, not {value!r}")


@frozen
class Dataset:
    """One exportable dataset, with the reference's fields."""

    dataset_name: str = field(validator=_identifier)
    display_name: str
    description: str
    has_experiment: bool
    has_unit: bool
    default_order_by: str | None = field(default=None, validator=_identifier)
    table: str | None = field(default=None, validator=_identifier)
    query: str | None = None
    source: str = field(default="app", validator=_app_only)
    timestamp_columns: list[str] = field(factory=list, validator=_identifiers)
    always_partition_by_unit: bool = False
    column_descriptions: dict[str, str] = field(factory=dict)
    column_units: dict[str, str] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table and query")
        if self.query is not None and not self.query.strip():
            raise ValueError("query: must not be empty")


converter = make_converter()


class InvalidDataset(ValueError):
    """A definition file that cannot be used, and why."""


def parse_dataset(text: str) -> Dataset:
    """A dataset from its YAML text, or InvalidDataset saying what is wrong."""
    try:
        data = yaml.load(text, Loader=_PlainLoader)
    except yaml.YAMLError as e:
        raise InvalidDataset(f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InvalidDataset("a dataset file must be a YAML mapping")
    try:
        return converter.structure(data, Dataset)
    except cattrs.BaseValidationError as e:
        raise InvalidDataset("; ".join(cattrs.transform_error(e, path="dataset", format_exception=_describe))) from None
    except (TypeError, ValueError) as e:
        raise InvalidDataset(str(e)) from None


def describe(dataset: Dataset) -> dict[str, Any]:
    """A dataset as the listing shows it: every field, defaults filled in."""
    described: dict[str, Any] = converter.unstructure(dataset)
    return described


def _builtin() -> list[Dataset]:
    here = files(__package__)
    found = []
    for entry in sorted(here.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(SUFFIX):
            found.append(parse_dataset(entry.read_text(encoding="utf-8")))  # a broken built-in is a bug: fail loudly
    return found


BUILTIN: tuple[Dataset, ...] = tuple(_builtin())


def _plugin_files(data_dir: Path) -> list[Path]:
    root = data_dir.resolve()
    found = []
    for sub in PLUGIN_DIRS:
        folder = data_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.name.endswith(SUFFIX) and not path.name.startswith(".") and path.resolve().is_relative_to(root) and path.is_file():
                found.append(path)
    return found


def load_datasets(data_dir: Path) -> dict[str, Dataset]:
    """Built-ins, then plugins' datasets, by name; blocking (run it in a thread).

    A plugin file that is invalid, too large, or reuses a name already taken is skipped and logged.
    """
    datasets = {d.dataset_name: d for d in BUILTIN}
    for path in _plugin_files(data_dir):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InvalidDataset(f"larger than {MAX_FILE_BYTES} bytes")
            dataset = parse_dataset(path.read_text(encoding="utf-8"))
        except (InvalidDataset, OSError, UnicodeDecodeError) as e:
            log.warn("Skipped the dataset file {path}: {problem}", path=str(path), problem=str(e))
            continue
        if dataset.dataset_name in datasets:
            log.warn("Skipped the dataset file {path}: the name {name} is already taken", path=str(path), name=dataset.dataset_name)
            continue
        datasets[dataset.dataset_name] = dataset
    return datasets
