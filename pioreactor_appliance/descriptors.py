"""The UI's descriptions of jobs and automations: YAML files, checked strictly, later files winning.

The web UI draws its job cards and automation forms from these. The built-in
ones ship in the package (``pioreactor_appliance/ui``); a unit's
``<data_dir>/ui`` and then ``<data_dir>/plugins/ui`` are read after them, so
a file there with the same ``job_name`` (or ``automation_name``) replaces
the shipped one. A file that does not fit the schema is logged and skipped:
one bad plugin must not hide every job from the UI.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from .bodies import structure
from .errors import ApiError

PACKAGE_UI = Path(__file__).with_name("ui")
AUTOMATION_TYPES = ("temperature", "dosing", "led")
log = Logger()

JSON_SCALAR = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}


def _scalar(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(
            f"{attribute.name} must be a string, number, boolean or null, not {type(value).__name__}"
        )


TOPICS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


def _topics(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(t, str) for t in value)):
        return
    raise ValueError(f"{attribute.name} must be a topic or a list of topics")


def _unique_keys(instance: Any, attribute: Any, value: list[Any]) -> None:
    keys = [item.key for item in value]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{attribute.name}: repeated key {', '.join(repeated)}")


@define
class PublishedSettingDescriptor:
    key: str
    type: Literal["numeric", "boolean", "string", "json"]
    display: bool
    description: str | None = None
    default: Any = field(
        default=None, validator=_scalar, metadata={"json_schema": JSON_SCALAR}
    )
    unit: str | None = None
    label: str | None = None
    editable: bool = True
    min: float | None = None
    max: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.key}: min {self.min:g} is above max {self.max:g}")
        if self.display and not self.label:
            raise ValueError(f"{self.key}: a displayed setting needs a label")


@define
class JobDescriptor:
    """How the UI shows one job: its card and the settings it lists."""

    display_name: str
    job_name: str
    display: bool
    published_settings: list[PublishedSettingDescriptor] = field(
        factory=list, validator=_unique_keys
    )
    source: str | None = None
    description: str | None = None
    subtext: str | None = None
    is_testing: bool = False


@define
class AutomationField:
    key: str
    label: str
    type: Literal["numeric", "string", "select", "boolean"]
    default: Any = field(
        default=None, validator=_scalar, metadata={"json_schema": JSON_SCALAR}
    )
    disabled: bool = False
    required: bool = True
    unit: str | None = None
    options: list[str] | None = None

    def __attrs_post_init__(self) -> None:
        if self.type == "select" and not self.options:
            raise ValueError(f"{self.key}: a select field needs options")


@define
class AutomationDescriptor:
    """The form the UI shows to start one automation."""

    display_name: str
    automation_name: str
    description: str | None = None
    source: str | None = None
    fields: list[AutomationField] = field(factory=list, validator=_unique_keys)


@define
class ChartDescriptor:
    """One chart of the UI's overview: where its data comes from (a table, live an MQTT topic) and how it is drawn."""

    chart_key: str
    data_source: str
    title: str
    y_axis_label: str
    mqtt_topic: Any = field(validator=_topics, metadata={"json_schema": TOPICS})
    source: str | None = None
    fixed_decimals: int = 2
    down_sample: bool = True
    lookback: Any = field(default=None, validator=_scalar, metadata={"json_schema": JSON_SCALAR})
    data_source_column: str | None = None
    payload_key: str | None = None
    y_transformation: str | None = None
    y_axis_domain: list[float] | None = None
    interpolation: str | None = None


@define
class SettingField:
    key: str
    label: str
    type: Literal["numeric", "boolean", "string"]
    default: Any = field(default=None, validator=_scalar, metadata={"json_schema": JSON_SCALAR})
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    description: str | None = None


@define
class SettingsDescriptor:
    """A collection of settings the UI lets a user edit together (``bioreactor``: the vessel's values)."""

    key: str
    display_name: str
    description: str | None = None
    source: str | None = None
    fields: list[SettingField] = field(factory=list, validator=_unique_keys)


def check_automation_type(automation_type: str) -> None:
    if automation_type not in AUTOMATION_TYPES:
        raise ApiError(
            400,
            "Not a valid automation type",
            cause=f"{automation_type!r} is not an automation type; one of {', '.join(AUTOMATION_TYPES)}.",
            remediation="Use temperature, dosing or led.",
        )


def _files(directories: Iterable[Path]) -> list[Path]:
    found = []
    for directory in directories:
        if directory.is_dir():
            found += sorted(
                p
                for p in directory.iterdir()
                if p.suffix in (".yaml", ".yml") and p.is_file()
            )
    return found


def _load(
    directories: Iterable[Path], cls: type[Any], key: str
) -> list[dict[str, Any]]:
    """Blocking: every valid file, keyed by ``key`` so a later one wins, in first-seen order."""
    by_name: dict[str, dict[str, Any]] = {}
    for path in _files(directories):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            described = structure(document, cls)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ApiError) as e:
            why = f"{e.error}: {e.cause}" if isinstance(e, ApiError) else str(e)
            log.warn(  # noqa: G010 (twisted's Logger has warn)
                "Skipping the UI descriptor {path}: {why}", path=str(path), why=why
            )
            continue
        by_name[getattr(described, key)] = attrs.asdict(described)
    return list(by_name.values())


@define
class Descriptors:
    """Reads the descriptor directories of one unit, on a thread, on every call (plugins come and go)."""

    data_dir: Path
    package_ui: Path = PACKAGE_UI

    def _roots(self) -> list[Path]:
        return [self.package_ui, self.data_dir / "ui", self.data_dir / "plugins" / "ui"]

    def jobs(self) -> Deferred[list[dict[str, Any]]]:
        return deferToThread(
            _load, [root / "jobs" for root in self._roots()], JobDescriptor, "job_name"
        )

    def charts(self) -> Deferred[list[dict[str, Any]]]:
        return deferToThread(_load, [root / "charts" for root in self._roots()], ChartDescriptor, "chart_key")

    def settings(self, canonical: dict[str, dict[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        """The settings collections; ``canonical`` maps a field of the ``bioreactor`` collection to its true default, min, max."""

        def load() -> list[dict[str, Any]]:
            collections = _load([root / "settings" for root in self._roots()], SettingsDescriptor, "key")
            for collection in collections:
                if collection["key"] == "bioreactor":
                    for item in collection["fields"]:
                        item.update(canonical.get(item["key"], {}))
            return collections

        return deferToThread(load)

    def automations(self, automation_type: str) -> Deferred[list[dict[str, Any]]]:
        check_automation_type(automation_type)
        directories = [root / "automations" / automation_type for root in self._roots()]
        return deferToThread(
            _load, directories, AutomationDescriptor, "automation_name"
        )
