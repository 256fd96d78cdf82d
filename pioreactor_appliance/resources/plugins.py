"""``/unit_api/plugins/...``: install and uninstall Python packages with pip, list the installed plugins.

Every request value is checked before pip sees it: a name must be a PEP 508
name, a version a release version, and a ``source`` a ``.whl`` file inside the
data directory (no URLs, no VCS, no pip options). pip runs as an argument list
(``[plugins] pip``), never through a shell, and an optional allow-list
(``[plugins] allowed``) limits what may be installed. After pip ends, the job
registry looks for Twisted plugins again, so a new job is found without a restart.

A plugin, for the installed list, is a distribution (other than the appliance
and Twisted itself) that ships a ``twisted/plugins/*.py`` dropin, or whose name starts with
``pioreactor-`` or ``pioreactor_``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shlex
import sys
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

from attrs import frozen
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..commands import CommandRunner
from ..config import Config, ConfigError
from ..errors import ApiError
from ..jobs.registry import Registry
from ..tasks import Accepted, TaskRegistry
from .files import confine, read_path
from .routing import Reply, route
from .shapes import CommandBody
from .system import VERSION, LockBusy, command_failed, run_locked

log = Logger()

NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
NOT_PLUGINS = frozenset(
    {"pioreactor-appliance", "twisted"}
)  # the appliance, and the dropins Twisted ships
PYTHON = "<python>"
LOCK = "plugins-lock"
UNKNOWN = "Unknown"
KILL_SWITCH = "DISALLOW_UI_INSTALLS"


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@frozen
class PluginSettings:
    """The ``[plugins]`` section, checked at start-up."""

    pip: tuple[str, ...]
    allowed: frozenset[str]
    timeout: float

    @classmethod
    def from_config(cls, config: Config) -> PluginSettings:
        text = config.get_str("plugins", "pip")
        try:
            words = tuple(
                sys.executable if w == PYTHON else w for w in shlex.split(text)
            )
        except ValueError as e:
            raise ConfigError(f"[plugins] pip: cannot split {text!r}: {e}") from None
        if not words:
            raise ConfigError("[plugins] pip is empty")
        allowed = [
            n.strip()
            for n in (config.get("plugins", "allowed") or "").split(",")
            if n.strip()
        ]
        bad = [n for n in allowed if not NAME.fullmatch(n)]
        if bad:
            raise ConfigError(f"[plugins] allowed: not package names: {', '.join(bad)}")
        return cls(
            words,
            frozenset(normalized(n) for n in allowed),
            config.get_float("plugins", "timeout_seconds"),
        )


class Plugin(TypedDict):
    name: str
    version: str
    description: str
    homepage: str
    source: str
    author: str


def _bad(error: str, cause: str, remediation: str) -> ApiError:
    return ApiError(400, error, cause=cause, remediation=remediation)


def requested_plugin(body: CommandBody, action: str) -> str:
    """The one valid package name the request names; 400 otherwise (the leader checks this before it fans out)."""
    example = f'Send {{"args": ["pioreactor-air-bubbler"]}} to {action} one plugin.'
    if not body.args:
        raise _bad("Plugin name is required", "args is empty.", example)
    if len(body.args) > 1:
        raise _bad(
            f"{action.capitalize()} one plugin at a time via the API",
            f"args names {len(body.args)} plugins.",
            example,
        )
    name = body.args[0]
    if not NAME.fullmatch(name):
        raise _bad(
            "Invalid plugin name.",
            f"{name!r} is not a package name (letters, digits, '.', '_' and '-', starting and ending with a letter or digit).",
            example,
        )
    return name


def plugin_name(body: CommandBody, settings: PluginSettings, action: str) -> str:
    """The one valid, allowed package name the request names; 400 or 403 otherwise."""
    name = requested_plugin(body, action)
    if settings.allowed and normalized(name) not in settings.allowed:
        raise ApiError(
            403,
            f"{name} is not in this unit's plugin allow-list.",
            cause="[plugins] allowed lists the packages that may be installed or uninstalled over HTTP.",
            remediation="Add the package to [plugins] allowed in the unit's config, or pick one that is listed.",
        )
    return name


def wheel_path(root: Path, source: Any, name: str) -> Path:
    """The wheel ``source`` names inside the data directory, built for package ``name``; runs in a thread."""
    remediation = 'Copy the wheel into the data directory and send {"options": {"source": "wheels/<file>.whl"}}.'
    if (
        not isinstance(source, str)
        or not source
        or source.startswith("-")
        or ":" in source
    ):
        raise _bad(
            "Invalid source.",
            f"options.source must be a path to a .whl file, not {source!r}.",
            remediation,
        )
    wheel = PurePosixPath(source).name
    if not wheel.endswith(".whl") or wheel.count("-") < 4:
        raise _bad(
            "Invalid source.", f"{wheel!r} is not a wheel's file name.", remediation
        )
    if normalized(wheel.split("-")[0]) != normalized(name):
        raise _bad(
            "Invalid source.",
            f"{wheel!r} is not a wheel of {name}.",
            "Name the package the wheel holds in args.",
        )
    path = confine(root, source)
    if not path.is_file():
        raise ApiError(
            404,
            "Wheel not found.",
            cause=f"No file at {source!r} in the data directory.",
            remediation=remediation,
        )
    return path


def check_installs_allowed(root: Path) -> None:
    """403 while the reference's kill switch file exists in the data directory; runs in a thread."""
    if (root / KILL_SWITCH).exists():
        raise ApiError(
            403,
            "Plugin installs are not available over HTTP on this unit.",
            cause=f"{KILL_SWITCH} exists in the data directory.",
            remediation=f"Remove {root / KILL_SWITCH} on the unit to allow them.",
        )


def install_arguments(root: Path, body: CommandBody, name: str) -> list[str]:
    """What follows ``pip``; runs in a thread (it looks at the wheel)."""
    check_installs_allowed(root)
    unknown = sorted(set(body.options) - {"version", "source"})
    if unknown or {"version", "source"} <= set(body.options):
        raise _bad(
            f"Unsupported install option(s): {', '.join(unknown) or 'version with source'}.",
            "Only options.version (a release) or options.source (a wheel in the data directory) is taken.",
            'Send {"args": [name]}, with {"options": {"version": "1.2.0"}} or {"options": {"source": "wheels/x.whl"}}.',
        )
    if "source" in body.options:
        return [
            "install",
            "--no-input",
            "--force-reinstall",
            "--no-deps",
            str(wheel_path(root, body.options["source"], name)),
        ]
    requirement = name
    if "version" in body.options:
        version = body.options["version"]
        if not isinstance(version, str) or not VERSION.fullmatch(version):
            raise _bad(
                "Invalid version.",
                f"options.version must be a release version such as 1.2.0, not {version!r}.",
                'Send {"options": {"version": "1.2.0"}}.',
            )
        requirement = f"{name}=={version}"
    return ["install", "--no-input", "--upgrade", requirement]


def _is_plugin(dist: importlib.metadata.Distribution) -> bool:
    name = normalized(dist.metadata["Name"] or "")
    if name in NOT_PLUGINS:
        return False
    if name.startswith("pioreactor-"):
        return True
    return any(
        f.parts[:2] == ("twisted", "plugins")
        and f.suffix == ".py"
        and len(f.parts) == 3
        for f in dist.files or ()
    )


def _homepage(meta: Any) -> str:
    if meta["Home-page"]:
        return str(meta["Home-page"])
    for entry in meta.get_all("Project-URL") or ():
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "home", "source"):
            return url.strip()
    return UNKNOWN


def installed_plugins(path: list[str] | None = None) -> list[Plugin]:
    """The plugins installed on ``path`` (default sys.path), by name; runs in a thread."""
    found: dict[str, Plugin] = {}
    dists: Iterable[importlib.metadata.Distribution] = importlib.metadata.distributions(
        **({} if path is None else {"path": path})
    )
    for dist in dists:
        meta = dist.metadata
        if (
            not meta["Name"]
            or normalized(meta["Name"]) in found
            or not _is_plugin(dist)
        ):
            continue  # the first one on the path is the one Python imports
        found[normalized(meta["Name"])] = {
            "name": meta["Name"],
            "version": dist.version or UNKNOWN,
            "description": meta["Summary"] or UNKNOWN,
            "homepage": _homepage(meta),
            "source": "entry_points",
            "author": meta["Author"] or meta["Author-email"] or UNKNOWN,
        }
    return [found[k] for k in sorted(found)]


def reload_registry(registry: Registry) -> None:
    """Forget import caches, then look for Twisted plugins again; runs in a thread."""
    importlib.invalidate_caches()
    registry.reload()


def plugin_file(root: Path, filename: str, max_bytes: int) -> bytes:
    """``plugins/<filename>`` in the data directory; runs in a thread."""
    name = PurePosixPath(filename).name
    if not name.endswith(".py"):
        raise ApiError(
            404,
            "must provide a .py file",
            cause=f"{name!r} does not end in .py.",
            remediation="Name a file plugin, e.g. my_plugin.py.",
        )
    try:
        found = read_path(root, f"plugins/{name}", max_bytes)
    except ApiError as e:
        if e.status != 404:
            raise
        # the reference's one message for a wrong suffix and a missing file
        raise ApiError(
            404,
            "must provide a .py file",
            cause=f"There is no plugins/{name}.",
            remediation="Name a file plugin that exists, e.g. my_plugin.py.",
        ) from None
    if not isinstance(found, bytes):
        raise ApiError(
            404,
            "must provide a .py file",
            cause=f"plugins/{name} is a directory.",
            remediation="Name a file plugin, e.g. my_plugin.py.",
        )
    return found


class PluginsApi:
    app = Klein()

    def __init__(
        self,
        data_dir: Path,
        runner: CommandRunner,
        tasks: TaskRegistry,
        registry: Registry,
        settings: PluginSettings,
        max_bytes: int,
        search_path: list[str] | None = None,
    ) -> None:
        self._root = data_dir
        self._runner = runner
        self._tasks = tasks
        self._registry = registry
        self._settings = settings
        self._max_bytes = max_bytes
        self._search_path = search_path
        self._locks: set[str] = set()

    def _pip(
        self, action: str, arguments: list[str]
    ) -> Callable[[], Coroutine[Any, Any, bool]]:
        """The task's work: run pip, reload the registry whatever pip did, fail with pip's last lines."""
        argv = (*self._settings.pip, *arguments)

        async def work() -> bool:
            try:
                result = await self._runner.run(argv, self._settings.timeout)
            except OSError as e:
                raise ApiError(
                    500,
                    f"{action} could not start pip: {e}.",
                    remediation="Check [plugins] pip in the unit's config.",
                ) from None
            finally:
                await deferToThread(reload_registry, self._registry)
            if not result.ok:
                error = command_failed(action, result, self._settings.timeout)
                log.error("{cause}", cause=error.cause)
                raise error
            return True

        return work

    @route(app, "/unit_api/plugins/installed", ["GET"], returns=list[Plugin])
    async def installed(self, request: IRequest) -> list[Plugin]:
        """The installed plugin packages: those with a Twisted plugin dropin, or named pioreactor-*."""
        request.setHeader(b"cache-control", b"no-store")
        return await deferToThread(installed_plugins, self._search_path)

    @route(
        app,
        "/unit_api/plugins/installed/<filename>",
        ["GET"],
        returns=str,
        media=("text/plain",),
    )
    async def installed_file(self, request: IRequest, filename: str) -> Reply:
        """A file plugin's source: ``plugins/<filename>.py`` in the data directory, as text."""
        content = await deferToThread(
            plugin_file, self._root, filename, self._max_bytes
        )
        request.setHeader(b"cache-control", b"no-store")
        return Reply(
            content,
            content_type=b"text/plain",
            headers={b"x-content-type-options": b"nosniff"},
        )

    @route(
        app,
        "/unit_api/plugins/install",
        ["PATCH", "POST"],
        body=CommandBody,
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    async def install(self, request: IRequest, body: CommandBody) -> Reply:
        """Install one package with pip (a release, a version, or a wheel in the data directory); true once pip succeeded."""
        name = plugin_name(body, self._settings, "install")
        arguments = await deferToThread(install_arguments, self._root, body, name)
        return run_locked(
            self._tasks, self._locks, LOCK, self._pip(f"Installing {name}", arguments)
        )

    @route(
        app,
        "/unit_api/plugins/uninstall",
        ["PATCH", "POST"],
        body=CommandBody,
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    async def uninstall(self, request: IRequest, body: CommandBody) -> Reply:
        """Uninstall one package with pip; true once pip succeeded (a package that is not installed is a success)."""
        name = plugin_name(body, self._settings, "uninstall")
        if body.options:
            raise _bad(
                f"Unsupported uninstall option(s): {', '.join(sorted(body.options))}.",
                "Uninstall takes a name only.",
                'Send {"args": [name]}.',
            )
        await deferToThread(check_installs_allowed, self._root)
        return run_locked(
            self._tasks,
            self._locks,
            LOCK,
            self._pip(f"Uninstalling {name}", ["uninstall", "-y", name]),
        )
