"""The unit's configuration: shipped defaults < the cluster's config.ini < unit_config.ini.

Option names keep their case (the reference's clients send ``PWM`` sections
and mixed-case keys), and a file that does not parse stops start-up with the
file and line, because a half-read config makes a reactor do the wrong thing
quietly.
"""

from __future__ import annotations

import ast
import configparser
import re
from collections.abc import Iterable
from pathlib import Path

from attrs import frozen

from .atomic_files import write_atomically

DEFAULTS = Path(__file__).with_name("default_config.ini")
SHARED_NAME = "config.ini"
UNIT_NAME = "unit_config.ini"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ConfigError(Exception):
    """A config file that cannot be used, with where and why."""


def new_parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, allow_no_value=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


def parse_text(text: str, source: str) -> configparser.ConfigParser:
    """Parse one file's text, naming ``source`` and the line in any error."""
    parser = new_parser()
    try:
        parser.read_string(text.replace("\u2013", "-").replace("\u2014", "-"), source=source)
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"{source}, line {e.lineno}: duplicate section [{e.section}]") from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(f"{source}, line {e.lineno}: duplicate option {e.option!r} in section [{e.section}]") from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(f"{source}, line {e.lineno}: a setting before any [section] header: {e.line.strip()!r}") from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]  # configparser keeps repr() of the line
        raise ConfigError(f"{source}, line {lineno}: cannot parse {ast.literal_eval(line).strip()!r}") from None
    return parser


def _read(path: Path) -> configparser.ConfigParser | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse_text(text, str(path))


def _defaults_layer() -> tuple[str, configparser.ConfigParser]:
    return str(DEFAULTS), parse_text(DEFAULTS.read_text(encoding="utf-8"), str(DEFAULTS))


@frozen
class Config:
    """A merged, read-only view with typed getters."""

    sections: dict[str, dict[str, str | None]]
    sources: tuple[str, ...]

    @classmethod
    def merge(cls, parsers: Iterable[tuple[str, configparser.ConfigParser]]) -> Config:
        sections: dict[str, dict[str, str | None]] = {}
        sources = []
        for source, parser in parsers:
            sources.append(source)
            for section in parser.sections():
                sections.setdefault(section, {}).update(parser.items(section, raw=True))
        return cls(sections, tuple(sources))

    @classmethod
    def defaults(cls) -> Config:
        """The shipped defaults alone."""
        return cls.merge([_defaults_layer()])

    @classmethod
    def load(cls, data_dir: Path) -> Config:
        """Read the shipped defaults, then ``config.ini`` and ``unit_config.ini`` from ``data_dir``."""
        layers = [_defaults_layer()]
        for name in (SHARED_NAME, UNIT_NAME):
            parser = _read(data_dir / name)
            if parser is not None:
                layers.append((str(data_dir / name), parser))
        return cls.merge(layers)

    def with_overrides(self, overrides: Iterable[tuple[str, str, str]]) -> Config:
        """This config with ``(section, key, value)`` triples on top, as a job's ``config_overrides`` give."""
        sections = {name: dict(values) for name, values in self.sections.items()}
        for section, key, value in overrides:
            sections.setdefault(section, {})[key] = value
        return Config(sections, (*self.sources, "config_overrides"))

    def section(self, section: str) -> dict[str, str | None]:
        return dict(self.sections.get(section, {}))

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        value = self.sections.get(section, {}).get(key)
        return default if value is None else value

    def _required(self, section: str, key: str) -> str:
        value = self.get(section, key)
        if value is None or value == "":
            raise ConfigError(f"[{section}] {key} is not set in {', '.join(self.sources)}")
        return value

    def get_str(self, section: str, key: str) -> str:
        return self._required(section, key)

    def get_int(self, section: str, key: str) -> int:
        value = self._required(section, key)
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"[{section}] {key} must be an integer, not {value!r}") from None

    def get_float(self, section: str, key: str) -> float:
        value = self._required(section, key)
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"[{section}] {key} must be a number, not {value!r}") from None

    def get_bool(self, section: str, key: str) -> bool:
        value = self._required(section, key).strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"[{section}] {key} must be true or false, not {value!r}")

    @property
    def leader_hostname(self) -> str:
        return self.get_str("cluster.topology", "leader_hostname")


def write_checked(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, once the written file parses (blocking)."""
    write_atomically(path, text, check=lambda written: parse_text(written.read_text(encoding="utf-8"), path.name))


def with_setting(text: str, section: str, key: str, value: str) -> str:
    """An ini file's ``text`` with ``key=value`` in ``[section]``; its comments and every other line kept."""
    lines = text.splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if header is None:
        separator = "\n" if text and not text.endswith("\n") else ""
        return f"{text}{separator}[{section}]\n{key}={value}\n"
    end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    setting = f"{key}={value}\n"
    own = re.compile(rf"\s*{re.escape(key)}\s*[=:]")
    for i in range(header + 1, end):
        if own.match(lines[i]):
            lines[i] = setting
            return "".join(lines)
    if not lines[header].endswith("\n"):
        lines[header] += "\n"
    lines.insert(header + 1, setting)
    return "".join(lines)


def check_shared(parser: configparser.ConfigParser) -> None:
    """What a cluster's ``config.ini`` must hold: where the leader is, as a host name or address, never a URL."""
    topology = parser["cluster.topology"] if parser.has_section("cluster.topology") else {}
    missing = [f"[cluster.topology] {key}" for key in ("leader_hostname", "leader_address") if not topology.get(key)]
    if missing:
        raise ConfigError(f"{SHARED_NAME}: missing required field(s): {', '.join(missing)}")
    for section in ("cluster.topology", "cluster.addresses", "mqtt"):
        if not parser.has_section(section):
            continue
        for key, value in parser.items(section, raw=True):
            if value and value.strip().lower().startswith("http"):
                raise ConfigError(f"{SHARED_NAME}: [{section}] {key} must be a host name or address, not a URL ({value!r})")
