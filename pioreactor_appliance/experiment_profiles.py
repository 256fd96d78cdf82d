"""Experiment profiles: the reference's YAML format, read by one strict parser into attrs classes.

A profile is a lab's protocol: which jobs start, change, pause and stop on
which workers, and when. A typo in it must not surface hours into a run, so
the whole file is checked when it is saved and again when it runs, and every
problem names its line and field (the YAML node marks give the lines).

Expressions (``${{ ... }}``, see profile_expressions) are parsed here too, in
the places the reference evaluates them (options, log messages, ``if``,
``while``, ``wait_until``/``condition``): a syntax error is a diagnostic like
any other, and an expression anywhere else is refused rather than run as its
literal text. They are evaluated when the action runs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from attrs import field, frozen

from .calibration_files import Escapes, confined
from .profile_expressions import (
    Expression,
    ExpressionSyntaxError,
    Literal,
    Template,
    Value,
    coerce,
    parse_condition,
    parse_value,
)
from .resources.names import unit_name_problem

PROFILES_DIR = "experiment_profiles"  # in the leader's data directory
MAX_PROFILE_BYTES = 256 * 1024
MAX_NODES = 20_000  # a bound on the YAML tree walked, whatever aliases it uses
FILENAME = re.compile(r"[A-Za-z0-9._-]+( [A-Za-z0-9._-]+)*")
SUFFIXES = (".yaml", ".yml")
JOB_NAME = re.compile(r"[A-Za-z0-9_]{1,63}")
DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd])\s*")
HOURS_PER = {"s": 1 / 3600, "m": 1 / 60, "h": 1.0, "d": 24.0}
BASIC = ("start", "stop", "pause", "resume", "update", "log")
ACTION_TYPES = (*BASIC, "repeat", "when")
LOG_LEVELS = ("debug", "info", "notice", "warning", "error")
COMMON_KEYS = ("type", "t", "hours_elapsed", "if")
KEYS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "start": ("options", "args", "config_overrides"),
    "update": ("options",),
    "stop": (),
    "pause": (),
    "resume": (),
    "log": ("options",),
    "repeat": ("every", "repeat_every_hours", "max_time", "max_hours", "while", "actions"),
    "when": ("wait_until", "condition", "actions"),
}
TOP_KEYS = ("version", "experiment_profile_name", "metadata", "plugins", "inputs", "common", "pioreactors")


class ProfileError(ValueError):
    """A profile that cannot be used: where (line, field path) and why."""

    def __init__(self, message: str, path: str = "", line: int | None = None, code: str = "invalid", hint: str | None = None) -> None:
        self.message, self.path, self.line, self.code, self.hint = message, path, line, code, hint
        where = ", ".join(p for p in (f"line {line}" if line else "", path) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def diagnostic(self) -> dict[str, Any]:
        """The reference's diagnostic shape: ``{severity, code, message, path, hint?}``."""
        found: dict[str, Any] = {"severity": "error", "code": self.code, "message": str(self), "path": self.path}
        if self.hint:
            found["hint"] = self.hint
        return found


def filename_problem(name: str) -> str | None:
    """Why ``name`` cannot name a profile file, or None: the reference's rule, and no path parts."""
    if not FILENAME.fullmatch(name) or name in (".", "..") or name.startswith("."):
        return "a profile's file name is letters, digits, '.', '_', '-' and single spaces, not starting with '.'"
    if not name.endswith(SUFFIXES):
        return "a profile's file name ends in .yaml or .yml"
    if len(name) > 200:
        return "a profile's file name is at most 200 characters"
    return None


def profiles_root(data_dir: Path) -> Path:
    return data_dir / PROFILES_DIR


def profile_path(data_dir: Path, filename: str) -> Path:
    """The file ``filename`` names in the profiles directory; ValueError if it is not a profile's name."""
    problem = filename_problem(filename)
    if problem:
        raise ValueError(problem)
    root = profiles_root(data_dir)
    try:
        return confined(root / filename, root)
    except Escapes:
        raise ValueError(f"{filename} leads outside {PROFILES_DIR}/ (a link?)") from None


Condition = bool | Expression


@frozen
class Action:
    """One step of a job's plan; ``hours`` is from the start of the profile (or of the enclosing repeat or when)."""

    type: str
    hours: float
    line: int
    options: dict[str, Any] = field(factory=dict)  # values may be Expression or Template
    args: tuple[str, ...] = ()
    config_overrides: tuple[tuple[str, str], ...] = ()
    condition: Condition = True  # ``if``, checked when the action is due
    every_hours: float | None = None  # repeat
    max_hours: float | None = None  # repeat
    repeat_while: Condition = True  # repeat: checked before each round
    wait_until: Condition = True  # when: polled until true
    actions: tuple[Action, ...] = ()  # repeat, when


@frozen
class JobPlan:
    job_name: str
    actions: tuple[Action, ...]


@frozen
class UnitPlan:
    unit: str
    label: str | None
    jobs: tuple[JobPlan, ...]


@frozen
class Profile:
    name: str
    common: tuple[JobPlan, ...]
    units: tuple[UnitPlan, ...]
    plugins: tuple[dict[str, Any], ...] = ()
    data: dict[str, Any] = field(factory=dict)  # as loaded, for listings

    def as_json(self) -> dict[str, Any]:
        """The profile as the reference lists it: the file's content with its top-level defaults."""
        defaults: dict[str, Any] = {
            "experiment_profile_name": self.name,
            "metadata": {"author": None, "description": None},
            "plugins": [],
            "inputs": {},
            "common": {"jobs": {}},
            "pioreactors": {},
        }
        return {**defaults, **self.data}


class _Reader:
    """Walks the composed YAML tree, so each value keeps the line it came from."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self._nodes = 0
        self.inputs: dict[str, Value] = {}  # bare words in expressions that name an input take its value
        self._parsed: set[int] = set()  # the nodes read as expressions, the only ones the listing may keep

    def _count(self, node: yaml.Node) -> None:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ProfileError(f"the profile has more than {MAX_NODES} YAML nodes", line=_line(node), code="too_large")

    def mapping(self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None, required: tuple[str, ...] = ()) -> dict[str, yaml.Node]:
        self._count(node)
        if not isinstance(node, yaml.MappingNode):
            raise ProfileError("expected a mapping (key: value lines)", path, _line(node), "wrong_type")
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                raise ProfileError(f"keys are names, not {key!r}", path, _line(key_node), "wrong_type")
            where = f"{path}.{key}" if path else key
            if key in found:
                raise ProfileError(f"{key} is given twice", where, _line(key_node), "duplicate_key")
            if allowed is not None and key not in allowed:
                raise ProfileError(f"unknown field {key!r}; allowed here: {', '.join(allowed)}", where, _line(key_node), "unknown_field")
            found[key] = value_node
        for key in required:
            if key not in found:
                raise ProfileError(f"{key} is required", f"{path}.{key}" if path else key, _line(node), "missing_field")
        return found

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        self._count(node)
        if not isinstance(node, yaml.SequenceNode):
            raise ProfileError("expected a list (lines starting with '-')", path, _line(node), "wrong_type")
        return list(node.value)

    def scalar(self, node: yaml.Node, path: str, expressions: bool = False) -> Any:
        """One value; text with ``${{`` only where ``expressions`` allows it (parsed by the caller)."""
        self._count(node)
        if not isinstance(node, yaml.ScalarNode):
            raise ProfileError("expected a single value", path, _line(node), "wrong_type")
        value = self._loader.construct_object(node)
        if isinstance(value, str) and "${{" in value and not expressions:
            raise ProfileError(
                "expressions (${{ ... }}) are allowed only in options, log messages, if, while, wait_until and condition",
                path,
                _line(node),
                "unsupported_expression",
                "Write the value itself here; see docs/api-deviations.md.",
            )
        return value

    def expression(self, node: yaml.Node, path: str, parse: Any) -> Any:
        """``parse`` (a profile_expressions parser) applied to the node's text, its errors as diagnostics."""
        self._parsed.add(id(node))
        try:
            return parse(self.scalar(node, path, expressions=True), self.inputs)
        except ExpressionSyntaxError as e:
            raise ProfileError(
                f"bad expression, {e}",
                path,
                _line(node),
                "expression_syntax",
                "Expressions take numbers, bare words, + - * / **, comparisons, and/or/not, ( ), "
                "unit:job:setting and the functions random(), unit(), hours_elapsed(), experiment(), job_name().",
            ) from None

    def text(self, node: yaml.Node, path: str) -> str:
        value = self.scalar(node, path)
        if not isinstance(value, str):
            raise ProfileError(f"expected text, got {value!r}", path, _line(node), "wrong_type", "Quote it.")
        return value

    def data(self, node: yaml.Node, path: str, expressions: str = "refuse") -> Any:
        """Any JSON-like value (options, metadata): mappings with text keys, lists, scalars.

        ``expressions``: "refuse" them, "parse" them (options), or "keep" the text of those
        already parsed (the listing, walked after the actions), refusing any other.
        """
        if isinstance(node, yaml.MappingNode):
            return {key: self.data(value, f"{path}.{key}", expressions) for key, value in self.mapping(node, path, None).items()}
        if isinstance(node, yaml.SequenceNode):
            return [self.data(item, f"{path}[{i}]", expressions) for i, item in enumerate(self.sequence(node, path))]
        value = self.scalar(node, path, expressions == "parse" or (expressions == "keep" and id(node) in self._parsed))
        if expressions == "parse" and isinstance(value, str):
            return self.expression(node, path, parse_value)
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise ProfileError(f"{value!r} is not a plain value; quote it", path, _line(node), "wrong_type")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProfileError("numbers must be finite", path, _line(node), "wrong_type")
        return value

    def hours(self, node: yaml.Node, path: str) -> float:
        """Hours as a number, or ``"30s"``, ``"2m"``, ``"1.5h"``, ``"2d"``."""
        value = self.scalar(node, path)
        if isinstance(value, str):
            match = DURATION.fullmatch(value)
            if match is None:
                raise ProfileError(f"{value!r} is not a time", path, _line(node), "bad_time", "Use hours as a number, or 30s, 2m, 1.5h, 2d.")
            value = float(match.group(1)) * HOURS_PER[match.group(2)]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ProfileError(f"{value!r} is not a time", path, _line(node), "bad_time", "Use hours as a number >= 0, or 30s, 2m, 1.5h, 2d.")
        return float(value)

    def condition(self, node: yaml.Node, path: str) -> Condition:
        """true, false, or an expression (with or without its ``${{ }}``, as the reference takes it)."""
        value = self.scalar(node, path, expressions=True)
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise ProfileError(f"expected true, false or an expression, got {value!r}", path, _line(node), "wrong_type")
        found: Expression = self.expression(node, path, parse_condition)
        if isinstance(found.tree, Literal):
            if isinstance(found.tree.value, bool):
                return found.tree.value
            raise ProfileError(f"{value!r} is neither true nor false", path, _line(node), "wrong_type", "Compare it: ${{ ... > ... }}.")
        return found


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _action(reader: _Reader, node: yaml.Node, path: str, allowed_types: tuple[str, ...]) -> Action:
    keys = reader.mapping(node, path, None, required=("type",))
    kind = reader.scalar(keys["type"], f"{path}.type")
    if kind not in allowed_types:
        raise ProfileError(f"unknown action {kind!r}; one of {', '.join(allowed_types)}", f"{path}.type", _line(keys["type"]), "unknown_action")
    allowed = (*COMMON_KEYS, *KEYS_BY_TYPE[kind])
    reader.mapping(node, path, allowed)
    if "t" in keys and "hours_elapsed" in keys:
        raise ProfileError("give t or hours_elapsed, not both", path, _line(node), "duplicate_key")
    time_key = "t" if "t" in keys else "hours_elapsed"
    hours = reader.hours(keys[time_key], f"{path}.{time_key}") if time_key in keys else 0.0
    values: dict[str, Any] = {"type": kind, "hours": hours, "line": _line(node)}
    if "if" in keys:
        values["condition"] = reader.condition(keys["if"], f"{path}.if")
    if "options" in keys:
        options = reader.data(keys["options"], f"{path}.options", "parse")
        if not isinstance(options, dict):
            raise ProfileError("options is a mapping", f"{path}.options", _line(keys["options"]), "wrong_type")
        values["options"] = options
    if kind == "log":
        _check_log(reader, keys, values.get("options", {}), path)
    if "args" in keys:
        args = [reader.scalar(item, f"{path}.args[{i}]") for i, item in enumerate(reader.sequence(keys["args"], f"{path}.args"))]
        values["args"] = tuple(str(a) for a in args)
    if "config_overrides" in keys:
        overrides = reader.data(keys["config_overrides"], f"{path}.config_overrides")
        if not isinstance(overrides, dict):
            raise ProfileError("config_overrides is a mapping", f"{path}.config_overrides", _line(keys["config_overrides"]), "wrong_type")
        values["config_overrides"] = tuple((str(k), str(v)) for k, v in overrides.items())
    if kind == "repeat":
        values.update(_repeat(reader, keys, path, node))
    if kind == "when":
        if "wait_until" in keys and "condition" in keys:
            raise ProfileError("give wait_until or condition, not both", path, _line(node), "duplicate_key")
        for name in ("wait_until", "condition"):
            if name in keys:
                values["wait_until"] = reader.condition(keys[name], f"{path}.{name}")
    if kind in ("repeat", "when"):
        if "actions" not in keys:
            raise ProfileError("actions is required", f"{path}.actions", _line(node), "missing_field")
        inner = BASIC if kind == "repeat" else (*BASIC, "repeat")
        values["actions"] = tuple(
            _action(reader, item, f"{path}.actions[{i}]", inner) for i, item in enumerate(reader.sequence(keys["actions"], f"{path}.actions"))
        )
    return Action(**values)


def _check_log(reader: _Reader, keys: dict[str, yaml.Node], options: dict[str, Any], path: str) -> None:
    if not isinstance(options.get("message"), (str, Expression, Template)) or not options["message"]:
        raise ProfileError("a log action needs options.message (text)", f"{path}.options.message", _line(keys.get("options", keys["type"])), "missing_field")
    unknown = sorted(set(options) - {"message", "level"})
    if unknown:
        raise ProfileError(f"unknown log option(s) {', '.join(unknown)}; log takes message and level", f"{path}.options", _line(keys["options"]), "unknown_field")
    if options.get("level", "notice") not in LOG_LEVELS:
        raise ProfileError(f"level {options['level']!r} is not one of {', '.join(LOG_LEVELS)}", f"{path}.options.level", _line(keys["options"]), "wrong_type")


def _repeat(reader: _Reader, keys: dict[str, yaml.Node], path: str, node: yaml.Node) -> dict[str, Any]:
    every_key = "every" if "every" in keys else "repeat_every_hours"
    if every_key not in keys:
        raise ProfileError("a repeat needs every (how often)", f"{path}.every", _line(node), "missing_field")
    every = reader.hours(keys[every_key], f"{path}.{every_key}")
    if every <= 0:
        raise ProfileError("every must be more than 0", f"{path}.{every_key}", _line(keys[every_key]), "bad_time")
    found: dict[str, Any] = {"every_hours": every}
    max_key = "max_time" if "max_time" in keys else "max_hours"
    if max_key in keys:
        found["max_hours"] = reader.hours(keys[max_key], f"{path}.{max_key}")
    if "while" in keys:
        found["repeat_while"] = reader.condition(keys["while"], f"{path}.while")
    return found


def _inputs(reader: _Reader, node: yaml.Node) -> dict[str, Value]:
    """The profile's named constants: numbers, text or true/false, as expressions see them."""
    found = {}
    for name, value_node in reader.mapping(node, "inputs", None).items():
        if not JOB_NAME.fullmatch(name) or name.lower() in ("and", "or", "not", "true", "false"):
            raise ProfileError(f"{name!r} cannot name an input (letters, digits, '_'; not a keyword)", f"inputs.{name}", _line(value_node), "bad_name")
        value = reader.scalar(value_node, f"inputs.{name}")
        if value is None or not isinstance(value, (str, int, float, bool)) or (isinstance(value, float) and not math.isfinite(value)):
            raise ProfileError(f"an input is a number, text or true/false, not {value!r}", f"inputs.{name}", _line(value_node), "wrong_type")
        found[name] = coerce(value)
    return found


def _jobs(reader: _Reader, node: yaml.Node, path: str) -> tuple[JobPlan, ...]:
    plans = []
    for job_name, job_node in reader.mapping(node, path, None).items():
        where = f"{path}.{job_name}"
        if not JOB_NAME.fullmatch(job_name):
            raise ProfileError(f"{job_name!r} is not a job name (letters, digits, '_')", where, _line(job_node), "bad_name")
        keys = reader.mapping(job_node, where, ("description", "actions"))
        actions = keys.get("actions")
        items = [] if actions is None else reader.sequence(actions, f"{where}.actions")
        plans.append(JobPlan(job_name, tuple(_action(reader, item, f"{where}.actions[{i}]", ACTION_TYPES) for i, item in enumerate(items))))
    return tuple(plans)


def parse_profile(text: str) -> Profile:
    """The profile in ``text``, or ProfileError naming the first problem's line and field."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PROFILE_BYTES:
        raise ProfileError(f"the profile is larger than {MAX_PROFILE_BYTES} bytes", code="too_large")
    try:
        loader = yaml.SafeLoader(text)  # refuses characters YAML does not allow (controls, lone surrogates)
    except yaml.YAMLError as e:
        raise ProfileError(f"not valid YAML: {e}", code="yaml_syntax") from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise ProfileError("the profile is empty", code="missing_field")
        reader = _Reader(loader)
        keys = reader.mapping(root, "", TOP_KEYS, required=("experiment_profile_name",))
        name = reader.text(keys["experiment_profile_name"], "experiment_profile_name")
        if not name.strip():
            raise ProfileError("experiment_profile_name must not be empty", "experiment_profile_name", _line(keys["experiment_profile_name"]))
        if "version" in keys:
            reader.text(keys["version"], "version")
        if "metadata" in keys:
            reader.mapping(keys["metadata"], "metadata", ("author", "description"))
        plugins = []
        for i, item in enumerate(reader.sequence(keys["plugins"], "plugins") if "plugins" in keys else []):
            plugin = reader.mapping(item, f"plugins[{i}]", ("name", "version"), required=("name",))
            plugins.append({k: reader.text(v, f"plugins[{i}].{k}") for k, v in plugin.items()})
        if "inputs" in keys:
            reader.inputs = _inputs(reader, keys["inputs"])
        common: tuple[JobPlan, ...] = ()
        if "common" in keys:
            common_keys = reader.mapping(keys["common"], "common", ("jobs",))
            common = _jobs(reader, common_keys["jobs"], "common.jobs") if "jobs" in common_keys else ()
        units = []
        for unit, unit_node in (reader.mapping(keys["pioreactors"], "pioreactors", None) if "pioreactors" in keys else {}).items():
            where = f"pioreactors.{unit}"
            problem = unit_name_problem(unit)
            if problem:
                raise ProfileError(problem, where, _line(unit_node), "bad_name")
            unit_keys = reader.mapping(unit_node, where, ("label", "jobs", "description"))
            label = reader.text(unit_keys["label"], f"{where}.label") if "label" in unit_keys else None
            jobs = _jobs(reader, unit_keys["jobs"], f"{where}.jobs") if "jobs" in unit_keys else ()
            units.append(UnitPlan(unit, label, jobs))
        data = reader.data(root, "", "keep")
        return Profile(name, common, tuple(units), tuple(plugins), data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(f"not valid YAML: {problem}", line=mark.line + 1 if mark else None, code="yaml_syntax") from None
    except RecursionError:
        raise ProfileError("the profile nests too deeply", code="too_large") from None
    finally:
        loader.dispose()
