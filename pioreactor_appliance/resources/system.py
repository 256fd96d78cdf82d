"""``/unit_api/system/...``: reboot, shutdown, update, the clock and the web server, through configured commands.

Each action runs the argument list ``[system.commands]`` gives it (shell-style
words, split with shlex, never run by a shell) as a task. The task fails when
the command fails, with its exit code and last output lines, rather than
succeeding with ``false``. An action whose lock is held answers as the
reference does (202 ``running`` with no task); one asked for again within its
rate limit answers 429.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

from attrs import define, frozen
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..bodies import read_form_file
from ..commands import CommandRunner, Result
from ..config import Config, ConfigError
from ..errors import ApiError
from ..limits import Limits
from ..releases import stage_release
from ..tasks import Accepted, TaskRegistry
from ..timestamps import iso_utc, parse_iso
from .caching import cache_for
from .routing import Reply, route
from .shapes import CommandBody
from .task_results import run_as_task

log = Logger()

COMMANDS = (
    "reboot",
    "shutdown",
    "web_server_status",
    "web_server_restart",
    "set_clock",
    "update",
)
# A release version as pip takes it: 1.2.3, 26.7.2rc1, 1.0.post1, 2.0.dev3.
VERSION = re.compile(
    r"^[0-9]+(\.[0-9]+){0,3}((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?$"
)


@frozen
class SystemSettings:
    """The ``[system]`` and ``[system.commands]`` sections, checked at start-up."""

    commands: dict[str, tuple[str, ...]]
    timeout: float
    update_timeout: float
    power_delay: float
    update_package: str

    @classmethod
    def from_config(cls, config: Config) -> SystemSettings:
        commands = {}
        for name in COMMANDS:
            text = config.get_str("system.commands", name)
            try:
                words = tuple(shlex.split(text))
            except ValueError as e:
                raise ConfigError(
                    f"[system.commands] {name}: cannot split {text!r}: {e}"
                ) from None
            if not words:
                raise ConfigError(f"[system.commands] {name} is empty")
            commands[name] = words
        package = config.get_str("system", "update_package")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", package):
            raise ConfigError(
                f"[system] update_package must be a package name, not {package!r}"
            )
        return cls(
            commands,
            config.get_float("system", "command_timeout_seconds"),
            config.get_float("system", "update_timeout_seconds"),
            config.get_float("system", "power_delay_seconds"),
            package,
        )


@define
class SetClock:
    """The time to set, ISO 8601 in UTC (``Z`` or ``+00:00``)."""

    utc_clock_time: str


class ClockTime(TypedDict):
    status: Literal["success"]
    clock_time: str


class WebServerStatus(TypedDict):
    service: str
    state: Literal["ready", "disconnected"]
    raw_status: str


class LockBusy(TypedDict):
    """The reference's answer while the same kind of action is still running: no task was started."""

    status: Literal["running"]
    lock: str
    retry_after_s: int
    remediation: str


@define
class RateLimit:
    """At most one accepted request per ``period`` seconds."""

    period: float
    last: float | None = None

    def take(self, now: float, what: str) -> None:
        if self.last is not None and now - self.last < self.period:
            wait = self.period - (now - self.last)
            raise ApiError(
                429,
                "Too many requests, please try again later.",
                cause=f"{what} is limited to one request per {self.period:g} s.",
                remediation=f"Retry in {wait:.0f} s.",
                headers={b"retry-after": str(max(1, math.ceil(wait))).encode("ascii")},
            )
        self.last = now


def clock_argument(text: str) -> str:
    """``utc_clock_time`` as ``date --utc --set`` takes it; 400 naming the problem otherwise."""
    remediation = (
        'Send {"utc_clock_time": "2026-01-05T12:00:00.000Z"}: ISO 8601, in UTC.'
    )
    error = "Invalid utc_clock_time format. Use ISO 8601."
    try:
        moment = parse_iso(text)
        offset = datetime.fromisoformat(text).utcoffset()
    except ValueError as e:
        raise ApiError(400, error, cause=str(e), remediation=remediation) from None
    if offset != timedelta(0):
        raise ApiError(
            400,
            error,
            cause=f"{text!r} is not in UTC (its offset is {offset}).",
            remediation=remediation,
        )
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def update_requirement(package: str, body: CommandBody) -> str:
    """What pip installs for this request; 400 for arguments or options the appliance does not take."""
    if body.args:
        raise ApiError(
            400,
            "CommandBody arguments are not supported.",
            cause=f"The appliance installs released versions only; got args {body.args!r}.",
            remediation='Send {} for the latest release, or {"options": {"version": "26.7.2"}}.',
        )
    unknown = sorted(set(body.options) - {"version"})
    if unknown:
        raise ApiError(
            400,
            f"Unsupported update option(s): {', '.join(unknown)}.",
            cause="Installs from a git repo, branch or sha are refused; only a released version is taken.",
            remediation='Send {"options": {"version": "26.7.2"}}, or {} for the latest release.',
        )
    if "version" not in body.options:
        return package
    version = body.options["version"]
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ApiError(
            400,
            "Invalid version.",
            cause=f"options.version must be a release version such as 26.7.2, not {version!r}.",
            remediation='Send {"options": {"version": "26.7.2"}}.',
        )
    return f"{package}=={version}"


def command_failed(action: str, result: Result, timeout: float) -> ApiError:
    tail = result.last_lines() or "(no output)"
    if result.timed_out:
        error = f"{action} timed out after {timeout:g} s and was killed."
    elif result.exit_code is None:
        error = f"{action} was ended by a signal."
    else:
        error = f"{action} failed with exit code {result.exit_code}."
    return ApiError(
        500,
        error,
        cause=f"{error} Last output: {tail}",
        remediation="Check the command in [system.commands] and the unit's log.",
    )


def run_locked(
    tasks: TaskRegistry,
    locks: set[str],
    lock: str,
    work: Callable[[], Coroutine[Any, Any, Any]],
) -> Reply:
    """Start ``work`` as a task holding ``lock`` (one of ``locks``); the reference's busy answer if it is held."""
    if lock in locks:
        busy: LockBusy = {
            "status": "running",
            "lock": lock,
            "retry_after_s": 1,
            "remediation": "Wait for the running operation to finish, then retry.",
        }
        return Reply(busy, code=202)
    locks.add(lock)

    async def holding() -> Any:
        try:
            return await work()
        finally:
            locks.discard(lock)

    return run_as_task(tasks, holding)


class SystemApi:
    app = Klein()

    def __init__(
        self,
        runner: CommandRunner,
        tasks: TaskRegistry,
        clock: IReactorTime,
        settings: SystemSettings,
        data_dir: Path,
        limits: Limits,
    ) -> None:
        """Release archives are staged in ``data_dir`` and bounded by ``limits``."""
        self._runner = runner
        self._tasks = tasks
        self._clock = clock
        self._settings = settings
        self._root = data_dir
        self._limits = limits
        self._locks: set[str] = set()
        self._power_limit = RateLimit(15)
        self._web_restart_limit = RateLimit(15)
        self._update_limit = RateLimit(10)

    async def _run(
        self,
        action: str,
        name: str,
        extra: tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> Result:
        """Run command ``name`` (plus ``extra`` arguments); an ApiError unless it exits 0."""
        timeout = self._settings.timeout if timeout is None else timeout
        try:
            result = await self._runner.run(
                (*self._settings.commands[name], *extra), timeout
            )
        except OSError as e:
            raise ApiError(
                500,
                f"{action} could not start: {e}.",
                remediation="Check the command in [system.commands].",
            ) from None
        if not result.ok:
            error = command_failed(action, result, timeout)
            log.error("{cause}", cause=error.cause)
            raise error
        return result

    def _locked(
        self,
        lock: str,
        work: Callable[[], Coroutine[Any, Any, Any]],
        limit: RateLimit | None = None,
        what: str = "",
    ) -> Reply:
        """Start ``work`` as a task holding ``lock``; the reference's busy answer if it is held, 429 if too soon."""
        if lock not in self._locks and limit is not None:
            limit.take(self._clock.seconds(), what)
        return run_locked(self._tasks, self._locks, lock, work)

    def _later(self, action: str, name: str) -> Callable[[], Coroutine[Any, Any, bool]]:
        """The work of an action that ends this process or this Pi: wait, so its 202 gets out first."""

        async def work() -> bool:
            await deferLater(self._clock, self._settings.power_delay, lambda: None)
            await self._run(action, name)
            return True

        return work

    def restart_soon(self, why: str) -> float:
        """Restart this process after the power delay, for a change only a fresh start applies; the delay."""
        action = f"Restarting the web server {why}"
        done = Deferred.fromCoroutine(self._later(action, "web_server_restart")())
        done.addErrback(lambda failure: log.error("{action} failed: {error}", action=action, error=failure.getErrorMessage()))
        return self._settings.power_delay

    @route(app, "/unit_api/system/utc_clock", ["GET"], returns=ClockTime)
    def utc_clock(self, request: IRequest) -> ClockTime:
        """This unit's clock, in UTC."""
        request.setHeader(b"cache-control", b"no-store")
        return {"status": "success", "clock_time": iso_utc(self._clock.seconds())}

    @route(
        app,
        "/unit_api/system/utc_clock",
        ["PATCH", "POST"],
        body=SetClock,
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def set_utc_clock(self, request: IRequest, body: SetClock) -> Reply:
        """Set this unit's clock; the task's result is true once the clock command succeeded."""
        argument = clock_argument(body.utc_clock_time)

        async def work() -> bool:
            await self._run("Setting the clock", "set_clock", (argument,))
            return True

        return self._locked("clock-lock", work)

    @route(
        app,
        "/unit_api/system/reboot",
        ["PATCH", "POST"],
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def reboot(self, request: IRequest) -> Reply:
        """Reboot the Pi, a few seconds after answering."""
        return self._locked(
            "power-lock",
            self._later("Reboot", "reboot"),
            self._power_limit,
            "Reboot and shutdown",
        )

    @route(
        app,
        "/unit_api/system/shutdown",
        ["PATCH", "POST"],
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def shutdown(self, request: IRequest) -> Reply:
        """Power the Pi off, a few seconds after answering."""
        return self._locked(
            "power-lock",
            self._later("Shutdown", "shutdown"),
            self._power_limit,
            "Reboot and shutdown",
        )

    def _update(self, body: CommandBody) -> Reply:
        requirement = update_requirement(self._settings.update_package, body)

        async def work() -> bool:
            await self._run(
                "The update", "update", (requirement,), self._settings.update_timeout
            )
            return True

        return self._locked("update-lock", work, self._update_limit, "Updating")

    @route(
        app,
        "/unit_api/system/update",
        ["PATCH", "POST"],
        body=CommandBody,
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def update(self, request: IRequest, body: CommandBody) -> Reply:
        """Install the latest release, or ``options.version``; true once the install finished."""
        return self._update(body)

    @route(
        app,
        "/unit_api/system/update/<target>",
        ["PATCH", "POST"],
        body=CommandBody,
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def update_target(self, request: IRequest, target: str, body: CommandBody) -> Reply:
        """As ``/system/update``; ``app`` is the only target."""
        if target != "app":
            raise ApiError(
                404, "Invalid target", remediation="Use /unit_api/system/update/app."
            )
        return self._update(body)

    @route(
        app,
        "/unit_api/system/update_from_archive",
        ["POST"],
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
        upload=True,
    )
    async def update_from_archive(self, request: IRequest) -> Reply:
        """Install the update_package wheel of a release archive (multipart field 'archive'); true once installed.

        The zip is checked before the 202 (400 naming the problem, 413 past the [limits] bounds):
        wheels and notes only, exactly one wheel of [system] update_package. It shares the update's
        lock and rate limit; its staging folder is removed once the task ends.
        """
        upload = await read_form_file(
            request,
            "archive",
            "No archive uploaded",
            "Send the release zip as the form field 'archive', e.g. curl -F archive=@release.zip.",
        )
        staging, wheel = await deferToThread(
            stage_release, self._root, upload, self._settings.update_package, self._limits
        )

        async def work() -> bool:
            try:
                await self._run(
                    "The update", "update", (str(wheel),), self._settings.update_timeout
                )
            finally:
                await deferToThread(shutil.rmtree, staging, True)
            return True

        busy = "update-lock" in self._locks
        try:
            reply = self._locked("update-lock", work, self._update_limit, "Updating")
        except ApiError:  # too soon: no task will remove the staging folder
            await deferToThread(shutil.rmtree, staging, True)
            raise
        if busy:  # the reference's busy answer: no task either
            await deferToThread(shutil.rmtree, staging, True)
        return reply

    @route(app, "/unit_api/system/web_server/status", ["GET"], returns=WebServerStatus)
    async def web_server_status(self, request: IRequest) -> WebServerStatus:
        """Whether the web server's service is active, as the status command says."""
        argv = self._settings.commands["web_server_status"]
        service = argv[-1]
        try:
            result = await self._runner.run(argv, self._settings.timeout)
            raw = result.last_lines(1) or f"exit code {result.exit_code}"
            state: Literal["ready", "disconnected"] = (
                "ready" if result.ok and raw == "active" else "disconnected"
            )
        except OSError as e:
            raw, state = f"cannot run the status command: {e}", "disconnected"
        cache_for(request, 3)
        return {"service": service, "state": state, "raw_status": f"{service}={raw}"}

    @route(
        app,
        "/unit_api/system/web_server/restart",
        ["PATCH", "POST"],
        returns=Accepted | LockBusy,
        status=202,
        dangerous=True,
    )
    def web_server_restart(self, request: IRequest) -> Reply:
        """Restart the web server's service a few seconds after answering (this process, on an appliance)."""
        return self._locked(
            "web-restart-lock",
            self._later("Restarting the web server", "web_server_restart"),
            self._web_restart_limit,
            "Restarting the web server",
        )
