"""``/api/experiments...``: create, list, describe and delete experiments, and label their units."""

from __future__ import annotations

import sqlite3
from typing import Any

from attrs import define, field
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..store import experiments as store
from ..store import labels
from ..store.database import Database
from ..store.workers import cluster_units
from ..tasks import Accepted, TaskRegistry
from ..timestamps import iso_utc
from .background import FanOutClient, fan_out_logged
from .caching import cache_for
from .names import UNIT_NAME_SCHEMA, valid_experiment_name, valid_unit_name
from .routing import Reply, route
from .shapes import Success

CURRENT = "current"


def clean_tags(tags: list[str]) -> list[str]:
    """Trimmed, non-empty, and each once ignoring case (the first spelling wins)."""
    seen: set[str] = set()
    kept = []
    for tag in (t.strip() for t in tags):
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            kept.append(tag)
    return kept


@define
class NewExperiment:
    experiment: str = field(validator=valid_experiment_name)
    description: str | None = None
    tags: list[str] = field(factory=list)
    mediaUsed: str | None = None
    organismUsed: str | None = None
    # Sent back by clients that post an experiment object as they received it; ignored.
    created_at: Any = None
    delta_hours: Any = None
    worker_count: Any = None


_UNCHANGED: Any = object()


@define
class ExperimentChanges:
    description: str | None = _UNCHANGED
    tags: list[str] | None = None

    def __attrs_post_init__(self) -> None:
        if self.description is _UNCHANGED and self.tags is None:
            raise ValueError("Missing description or tags: send at least one of them")


@define
class UnitLabel:
    unit: str = field(validator=valid_unit_name, metadata=UNIT_NAME_SCHEMA)
    label: str


def _label_unit(conn: sqlite3.Connection, experiment: str, unit: str, label: str, now: str) -> None:
    """Set or (for an empty label) remove a unit's label, refusing what the reference silently dropped."""
    store.require_experiment(conn, experiment)
    if not label:
        labels.remove_unit_label(conn, experiment, unit)
        return
    holder = labels.label_holder(conn, experiment, label)
    if holder is not None and holder != unit:
        raise ApiError(
            409,
            f"Label {label!r} is already used in {experiment}.",
            cause=f"{holder} has the label {label!r} in {experiment}; labels are unique within an experiment.",
            remediation=f"Choose another label, or first change {holder}'s label.",
        )
    labels.set_unit_label(conn, experiment, unit, label, now)


class ExperimentsApi:
    app = Klein()

    def __init__(self, db: Database, clock: IReactorTime, tasks: TaskRegistry, fanout: FanOutClient, leader_hostname: str) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks
        self._fanout = fanout
        self._leader = leader_hostname

    async def _experiment(self, experiment: str) -> dict[str, Any]:
        found = await self._db.read(store.get_experiment, experiment, self._clock.seconds())
        if found is None:
            raise store.experiment_not_found(experiment)
        return found

    @route(app, "/api/experiments", ["GET"], returns=list[store.Experiment])
    async def list_experiments(self, request: IRequest) -> Any:
        """Every experiment, newest first."""
        cache_for(request, 5)
        return await self._db.read(store.all_experiments, self._clock.seconds())

    @route(app, "/api/experiments", ["POST"], body=NewExperiment, returns=store.Experiment, status=201)
    async def create_experiment(self, request: IRequest, body: NewExperiment) -> Reply:
        """Create an experiment; 201 with it, 409 if the name is taken."""
        created = await self._db.run(
            store.create_experiment,
            body.experiment,
            body.description or "",
            clean_tags(body.tags),
            body.mediaUsed,
            body.organismUsed,
            iso_utc(self._clock.seconds()),
        )
        if not created:
            raise ApiError(
                409,
                f"Experiment {body.experiment} already exists.",
                cause="Experiment names are unique.",
                remediation="Choose another name, or change the existing experiment with PATCH.",
            )
        return Reply(await self._experiment(body.experiment), 201)

    @route(app, "/api/experiments/latest", ["GET"], returns=store.Experiment | None)
    async def latest(self, request: IRequest) -> Any:
        """The experiment created last, or null."""
        cache_for(request, 2)
        return await self._db.read(store.latest_experiment, self._clock.seconds())

    @route(app, "/api/experiments/active", ["GET"], returns=list[store.Experiment])
    async def active(self, request: IRequest) -> Any:
        """Experiments with at least one active worker assigned."""
        cache_for(request, 2)
        return await self._db.read(store.active_experiments, self._clock.seconds())

    @route(app, "/api/experiments/assignment_count", ["GET"], returns=list[store.AssignmentCount])
    async def assignment_count(self, request: IRequest) -> Any:
        """How many workers each experiment has (experiments with none are left out)."""
        cache_for(request, 3)
        return await self._db.read(store.assignment_counts)

    @route(app, "/api/experiments/<experiment>", ["GET"], returns=store.Experiment)
    async def get_experiment(self, request: IRequest, experiment: str) -> Any:
        """One experiment."""
        return await self._experiment(experiment)

    @route(app, "/api/experiments/<experiment>", ["PATCH"], body=ExperimentChanges, returns=store.Experiment)
    async def update_experiment(self, request: IRequest, experiment: str, body: ExperimentChanges) -> Any:
        """Change the description and/or replace the tags; answers the updated experiment."""
        description = None if body.description is _UNCHANGED else body.description or ""
        tags = None if body.tags is None else clean_tags(body.tags)
        updated = await self._db.run(store.update_experiment, experiment, description, tags, iso_utc(self._clock.seconds()))
        if not updated:
            raise store.experiment_not_found(experiment)
        return await self._experiment(experiment)

    @route(app, "/api/experiments/<experiment>", ["DELETE"], returns=Accepted, status=202, expensive=True)
    async def delete_experiment(self, request: IRequest, experiment: str) -> Reply:
        """Stop the experiment's jobs everywhere, then delete it and all its data in a task."""
        await self._db.read(store.require_experiment, experiment)
        units = await self._db.read(cluster_units, self._leader)
        fan_out_logged(self._fanout, "POST", units, "/unit_api/jobs/stop", {"experiment": experiment})
        task = self._tasks.submit(lambda: self._db.run(_delete, experiment))
        return Reply(self._tasks.accepted(task), 202)

    async def _label_experiment(self, experiment: str) -> str:
        if experiment != CURRENT:
            return experiment
        latest = await self._db.read(store.latest_experiment_name)
        if latest is None:
            raise ApiError(404, "No experiment yet.", cause="'current' means the latest experiment, and there is none.", remediation="Create an experiment first.")
        return latest

    @route(app, "/api/experiments/<experiment>/unit_labels", ["GET"], returns=dict[str, str])
    async def unit_labels(self, request: IRequest, experiment: str) -> Any:
        """``{unit: label}`` for the experiment; ``current`` means the latest experiment."""
        experiment = await self._label_experiment(experiment)
        await self._db.read(store.require_experiment, experiment)
        cache_for(request, 10)
        return await self._db.read(labels.unit_labels, experiment)

    @route(app, "/api/experiments/<experiment>/unit_labels", ["PUT", "PATCH"], body=UnitLabel, returns=Success, status=201)
    async def set_unit_label(self, request: IRequest, experiment: str, body: UnitLabel) -> Reply:
        """Label a unit in the experiment; an empty label removes it."""
        experiment = await self._label_experiment(experiment)
        await self._db.run(_label_unit, experiment, body.unit, body.label.strip(), iso_utc(self._clock.seconds()))
        return Reply({"status": "success"}, 201)


def _delete(conn: sqlite3.Connection, experiment: str) -> dict[str, Any]:
    if not store.delete_experiment(conn, experiment):
        raise store.experiment_not_found(experiment)
    return {"result": True, "experiment": experiment, "database_space": store.database_space(conn), "msg": "Deleted experiment"}
