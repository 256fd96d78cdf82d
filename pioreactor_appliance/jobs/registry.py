"""Which jobs and automations this unit can run, found through Twisted plugins.

A job class provides ``IJobKind``; an automation class provides
``IAutomationKind``. Built-ins are listed in ``twisted/plugins/pioreactor_jobs.py``;
a third-party package adds its own dropin to ``twisted/plugins/`` and is found
the same way, on the next ``reload()``.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.plugin import IPlugin, getPlugins
from zope.interface import Attribute

AUTOMATION_TYPES = ("dosing", "led", "temperature")
log = Logger()


class IJobKind(IPlugin):
    """A job class: ``job_name``, ``published_settings``, ``options``, and ``(context, options, args)`` builds one."""

    job_name = Attribute("the name runs and topics use, e.g. stirring")


class IAutomationKind(IPlugin):
    """An automation class: runs as the job ``<automation_type>_automation`` with ``automation_name``."""

    automation_type = Attribute("dosing, led or temperature")
    automation_name = Attribute("e.g. chemostat")


def automation_job_name(automation_type: str) -> str:
    return f"{automation_type}_automation"


class Registry:
    """Job and automation classes by name; automations also answer to their ``<type>_automation`` job name."""

    def __init__(
        self,
        jobs: dict[str, Any] | None = None,
        automations: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.jobs: dict[str, Any] = dict(jobs or {})
        self.automations: dict[str, dict[str, Any]] = {
            t: dict((automations or {}).get(t, {})) for t in AUTOMATION_TYPES
        }

    @classmethod
    def from_plugins(cls) -> Registry:
        registry = cls()
        registry.reload()
        return registry

    def reload(self) -> None:
        """Look for plugins again: a package installed since start-up is found without a restart."""
        import twisted.plugins

        jobs: dict[str, Any] = {}
        automations: dict[str, dict[str, Any]] = {t: {} for t in AUTOMATION_TYPES}
        for kind in getPlugins(IJobKind, twisted.plugins):
            jobs[kind.job_name] = kind
        for kind in getPlugins(IAutomationKind, twisted.plugins):
            if kind.automation_type not in automations:
                log.warning(
                    "Ignoring automation {name}: unknown type {type}",
                    name=kind.automation_name,
                    type=kind.automation_type,
                )
                continue
            automations[kind.automation_type][kind.automation_name] = kind
        self.jobs, self.automations = jobs, automations

    def automation_type_of(self, job_name: str) -> str | None:
        for automation_type in AUTOMATION_TYPES:
            if job_name == automation_job_name(automation_type):
                return automation_type
        return None

    def knows(self, job_name: str) -> bool:
        return job_name in self.jobs or self.automation_type_of(job_name) is not None

    def all_kinds(self) -> list[Any]:
        """Every job and automation class, sorted by (job_name, automation_name)."""
        kinds = list(self.jobs.values()) + [
            k for by_name in self.automations.values() for k in by_name.values()
        ]
        return sorted(
            kinds, key=lambda k: (k.job_name, getattr(k, "automation_name", ""))
        )
