"""What this unit can run, as ``/unit_api/capabilities`` describes it: read from the job classes' declarations.

The reference finds this by importing every module and walking its CLI; here
each job and automation class already declares its options and published
settings, so the answer is built from the registry alone.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from .base import STATE
from .registry import Registry
from .settings import Option, Setting

_CLI_TYPES = {
    "float": "float",
    "integer": "integer",
    "string": "text",
    "boolean": "boolean",
    "json": "text",
}


class CapabilityOption(TypedDict):
    name: str
    long_flag: str
    help: str
    required: bool
    multiple: bool
    default: Any
    type: str


class Capability(TypedDict):
    """One job or automation: how to run it and what it publishes."""

    job_name: str
    automation_name: NotRequired[str]
    help: str
    arguments: list[dict[str, Any]]
    options: list[CapabilityOption]
    published_settings: dict[str, dict[str, Any]]
    cli_example: str


def cli_type(option: Option) -> str:
    """The reference's Click type names: ``float range`` for a bounded float, ``choice`` for a set of values."""
    if option.choices:
        return "choice"
    base = _CLI_TYPES.get(option.datatype, "text")
    bounded = option.minimum is not None or option.maximum is not None
    return f"{base} range" if bounded and base in ("float", "integer") else base


def _option(name: str, option: Option) -> CapabilityOption:
    return {
        "name": name,
        "long_flag": name.replace("_", "-"),
        "help": option.help,
        "required": False,
        "multiple": False,
        "default": option.default,
        "type": cli_type(option),
    }


def _setting_option(name: str, setting: Setting) -> CapabilityOption:
    return {
        "name": name,
        "long_flag": name.replace("_", "-"),
        "help": "",
        "required": False,
        "multiple": False,
        "default": None,
        "type": setting.datatype,
    }


def capability(kind: Any) -> Capability:
    automation_name = getattr(kind, "automation_name", None)
    options = [
        _option(name, option)
        for name, option in kind.options.items()
        if name != "automation_name"
    ]
    if automation_name is not None:
        # As the reference: an automation also takes each settable setting as an option.
        taken = {o["name"] for o in options}
        options += [
            _setting_option(n, s)
            for n, s in kind.published_settings.items()
            if s.settable and n not in taken
        ]
    settings = {
        name: setting.as_json() for name, setting in kind.published_settings.items()
    }
    settings[STATE] = {"datatype": "string", "settable": True}
    described: Capability = {"job_name": kind.job_name}  # type: ignore[typeddict-item]
    example = f"pio run {kind.job_name} [OPTIONS]"
    if automation_name is not None:
        described["automation_name"] = automation_name
        example = (
            f"pio run {kind.job_name} --automation-name {automation_name} [OPTIONS]"
        )
    described.update(
        help=kind.help or (kind.__doc__ or "").strip().split("\n")[0],
        arguments=[],
        options=options,
        published_settings=settings,
        cli_example=example,
    )
    return described


def capabilities(registry: Registry) -> list[Capability]:
    """Every job and automation, sorted by (job_name, automation_name)."""
    return [capability(kind) for kind in registry.all_kinds()]
