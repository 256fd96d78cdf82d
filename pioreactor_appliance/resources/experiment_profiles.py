"""``/api/experiment_profiles...``: the leader's profile files, and which profiles run or ran in an experiment.

Files live in ``experiment_profiles/`` in the leader's data directory. Every
write is checked first (the whole profile, then the name) and lands
atomically, so the runner and the listing never see half a file; names are the
reference's safe set and never leave that directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from attrs import define, field
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..atomic_files import write_atomically
from ..errors import ApiError
from ..experiment_profiles import (
    SUFFIXES,
    Profile,
    ProfileError,
    filename_problem,
    parse_profile,
    profile_path,
    profiles_root,
)
from ..jobs.experiment_profile import ExperimentProfile
from ..jobs.manager import JobManager
from ..store.database import Database
from ..store.profile_runs import ProfileRun, recent_runs
from .caching import cache_for
from .jobs import job_settings
from .routing import Reply, route
from .shapes import Success


@define
class NewProfile:
    """Only the basename of ``filename`` is used, as in the reference."""

    filename: str
    body: str


@define
class ProfileText:
    body: str


class ProfileListing(TypedDict):
    experimentProfile: dict[str, Any]
    file: str
    fullpath: str


class RunningProfile(TypedDict):
    job_name: str
    experiment: str
    job_id: int
    settings: dict[str, Any]


@define
class ProfileRejected(ApiError):
    """A profile that does not validate: the reference's 400 with its ``diagnostics``."""

    diagnostics: list[dict[str, Any]] = field(factory=list, kw_only=True)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "diagnostics": self.diagnostics}


def _checked(text: str) -> Profile:
    try:
        return parse_profile(text)
    except ProfileError as e:
        raise ProfileRejected(
            400,
            "Validation error.",
            cause=str(e),
            remediation="Fix the profile at that line and field; nothing was saved.",
            diagnostics=[e.diagnostic()],
        ) from None


def _named(data_dir: Path, filename: str, missing_is: int = 400) -> Path:
    """The profile file ``filename`` names; a name that is not YAML is ``missing_is``, any other bad name 400."""
    if not filename.endswith(SUFFIXES) and missing_is == 404:
        raise ApiError(404, f"Profile {filename} not found.", cause="Profiles are .yaml or .yml files.", remediation="List them with GET /api/experiment_profiles.")
    try:
        return profile_path(data_dir, filename)
    except ValueError as e:
        raise ApiError(400, "Invalid filename.", cause=f"{filename!r}: {e}", remediation="Use a name like my_profile.yaml.") from None


def _write(path: Path, text: str, create_only: bool) -> None:
    """The file is the old one or the whole new one; with ``create_only``, an existing file is 400."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, text, create_only=create_only)
    except FileExistsError:
        raise ApiError(
            400, f"A profile named {path.name} already exists.", remediation="Choose another name, or change it with PATCH /api/experiment_profiles/<filename>."
        ) from None


def _listing(root: Path) -> list[ProfileListing]:
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if filename_problem(path.name) or not path.is_file() or path.is_symlink():
            continue
        try:
            mtime, text = path.stat().st_mtime, path.read_text(encoding="utf-8")
            profile = parse_profile(text) if text.strip() else Profile(f"temporary name: {path.stem}", (), ())
        except (OSError, UnicodeDecodeError, ProfileError):
            continue  # as the reference: a file that does not parse is left out
        found.append((mtime, {"experimentProfile": profile.as_json(), "file": path.name, "fullpath": str(path)}))
    return [item for _, item in sorted(found, key=lambda pair: pair[0], reverse=True)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None


def _delete(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _not_found(filename: str) -> ApiError:
    return ApiError(404, f"Profile {filename} not found.", remediation="List them with GET /api/experiment_profiles.")


class ExperimentProfilesApi:
    app = Klein()

    def __init__(self, data_dir: Path, db: Database, jobs: JobManager) -> None:
        self._data_dir = data_dir
        self._db = db
        self._jobs = jobs

    @route(app, "/api/experiment_profiles", ["GET"], returns=list[ProfileListing])
    async def list_profiles(self, request: IRequest) -> Any:
        """Every profile that parses, newest first, with its defaults filled in."""
        cache_for(request, 5)
        return await deferToThread(_listing, profiles_root(self._data_dir))

    @route(app, "/api/experiment_profiles", ["POST"], body=NewProfile, returns=Success)
    async def create_profile(self, request: IRequest, body: NewProfile) -> Any:
        """Save a new profile; 400 if it does not validate, its name is unsafe, or the file exists."""
        _checked(body.body)
        path = _named(self._data_dir, Path(body.filename).name)
        await deferToThread(_write, path, body.body, True)
        return {"status": "success"}

    @route(app, "/api/experiment_profiles/<filename>", ["GET"], returns=str, media=("text/plain",))
    async def get_profile(self, request: IRequest, filename: str) -> Reply:
        """The profile's YAML as saved."""
        text = await deferToThread(_read, _named(self._data_dir, filename, missing_is=404))
        if text is None:
            raise _not_found(filename)
        return Reply(text.encode("utf-8"), content_type=b"text/plain; charset=utf-8")

    @route(app, "/api/experiment_profiles/<filename>", ["PATCH"], body=ProfileText, returns=Success)
    async def update_profile(self, request: IRequest, filename: str, body: ProfileText) -> Any:
        """Create or replace a profile, checked as a new one is."""
        _checked(body.body)
        path = _named(self._data_dir, filename)
        await deferToThread(_write, path, body.body, False)
        return {"status": "success"}

    @route(app, "/api/experiment_profiles/<filename>", ["DELETE"], returns=Success)
    async def delete_profile(self, request: IRequest, filename: str) -> Any:
        """Delete a profile file; a run already started from it goes on."""
        if not await deferToThread(_delete, _named(self._data_dir, filename, missing_is=404)):
            raise _not_found(filename)
        return {"status": "success"}

    @route(app, "/api/experiments/<experiment>/experiment_profiles/running", ["GET"], returns=list[RunningProfile])
    def running(self, request: IRequest, experiment: str) -> list[RunningProfile]:
        """The profile running in the experiment on the leader, with its settings, or []."""
        found: list[RunningProfile] = []
        for record in self._jobs.running_jobs():
            job = self._jobs.get(record.job_name)
            if record.job_name == ExperimentProfile.job_name and record.experiment == experiment and job is not None:
                found.append({"job_name": record.job_name, "experiment": record.experiment, "job_id": record.job_id, "settings": job_settings(job)})
        return found

    @route(app, "/api/experiments/<experiment>/experiment_profiles/recent", ["GET"], returns=list[ProfileRun])
    async def recent(self, request: IRequest, experiment: str) -> Any:
        """The experiment's latest profile runs, newest first."""
        cache_for(request, 5)
        return await self._db.read(recent_runs, experiment)
