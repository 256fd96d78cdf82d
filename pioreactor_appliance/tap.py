"""``twistd pioreactor``: the options, and the tree of services one Pi runs.

Services start in the order they are added and stop in reverse, so the HTTP
port closes first, then tasks are cancelled, then the jobs stop (the monitor's
``disconnected`` tells the UI the unit left), then MQTT disconnects, and the
database closes last.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen
from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool

from .calibration_sessions.protocol import Bench, SessionSettings
from .calibration_sessions.registry import core_protocols
from .calibration_sessions.runner import CalibrationSessions
from .commands import CommandRunner
from .config import Config, ConfigError
from .descriptors import Descriptors
from .errors import ApiError
from .fanout import FanOut, UnitAddresses
from .hardware.connection import PigpioConnection
from .hardware.hat import Hat
from .hardware.safety import HeaterGuard
from .hardware.unit import Hardware, HardwareSettings, model_of
from .ingest.service import IngestService, IngestSettings, ingest_client_id
from .jobs.bioreactor import Bioreactor
from .jobs.context import LeaderServices
from .jobs.manager import Connector, JobManager
from .jobs.registry import Registry
from .jobs.unit_state import PersistentCache, UnitState
from .mdns import Discovery
from .mqtt import MqttClient, Will, parse_hostport
from .resources.api_documents import api_documents
from .resources.backups import BackupsApi
from .resources.calibration_sessions import CalibrationSessionsApi
from .resources.calibrations import CalibrationsApi
from .resources.catalog import CatalogApi
from .resources.cluster_system import ClusterSystemApi
from .resources.config_api import ConfigApi
from .resources.config_files import ConfigFilesApi
from .resources.datasets import DatasetsApi
from .resources.experiment_profiles import ExperimentProfilesApi
from .resources.experiments import ExperimentsApi
from .resources.files import FilesApi
from .resources.jobs import JobsApi, leader_experiment
from .resources.leader_cache import LeaderCache
from .resources.leader_ui import LeaderUiApi
from .resources.logs import LogsApi
from .resources.plugins import PluginsApi, PluginSettings
from .resources.routing import Router, make_site
from .resources.system import SystemApi, SystemSettings
from .resources.task_results import TaskResultsApi
from .resources.time_series import TimeSeriesApi
from .resources.unit_archives import UnitArchivesApi
from .resources.unit_info import UnitInfoApi
from .resources.unit_jobs import UnitJobsApi
from .resources.unit_plugins import UnitPluginsApi
from .resources.units import UnitsApi
from .resources.worker_calibrations import WorkerCalibrationsApi
from .resources.worker_setup import WorkerSetupApi
from .resources.workers import WorkersApi
from .security.policy import PolicyError, build_policy
from .security.signing import Signer
from .store.database import Database
from .systemd_notify import SystemdNotifier
from .tasks import TaskRegistry

ROLES = ("leader", "worker")
DATABASE_NAME = "storage/pioreactor.sqlite"
LOCAL_CACHE_NAME = "storage/local_cache.json"


class Options(usage.Options):
    optParameters = [
        ["role", None, None, "leader or worker (default: leader when --unit is [cluster.topology] leader_hostname)"],
        ["unit", None, socket.gethostname(), "this unit's name"],
        ["data-dir", None, "~/.pioreactor", "config, database and calibrations"],
        ["listen", None, "tcp:80", "Twisted endpoint string for HTTP"],
        ["mqtt", None, None, "broker HOST:PORT (default: [mqtt] broker_address and broker_port)"],
        ["pigpio", None, "127.0.0.1:8888", "pigpiod HOST:PORT"],
    ]

    def postOptions(self) -> None:
        self["data-dir"] = Path(self["data-dir"]).expanduser()
        try:
            self["config"] = Config.load(self["data-dir"])
        except ConfigError as e:
            raise usage.UsageError(f"bad config: {e}") from None
        if self["role"] is None:
            self["role"] = "leader" if self["unit"] == self["config"].leader_hostname else "worker"
        if self["role"] not in ROLES:
            raise usage.UsageError(f"--role must be leader or worker, not {self['role']!r}")
        try:
            build_policy(self["unit"], self["data-dir"], self["config"], Clock())
        except PolicyError as e:
            raise usage.UsageError(f"bad security settings: {e}") from None
        try:
            HardwareSettings.from_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"bad hardware settings: {e}") from None
        try:
            SessionSettings.from_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"bad calibration session settings: {e}") from None
        try:
            SystemSettings.from_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"bad system commands: {e}") from None
        try:
            PluginSettings.from_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"bad plugin settings: {e}") from None
        try:
            if self["mqtt"] is None:
                config = self["config"]
                self["mqtt"] = f"{config.get_str('mqtt', 'broker_address')}:{config.get_int('mqtt', 'broker_port')}"
            self["mqtt"] = parse_hostport(self["mqtt"], 1883)
            self["pigpio"] = parse_hostport(self["pigpio"], 8888)
        except (ValueError, ConfigError) as e:
            raise usage.UsageError(str(e)) from None


@frozen
class Settings:
    """What ``makeService`` needs, taken from the options and the config."""

    role: str
    unit: str
    data_dir: Path
    listen: str
    mqtt: tuple[str, int]
    pigpio: tuple[str, int]
    config: Config

    @classmethod
    def from_options(cls, options: usage.Options) -> Settings:
        return cls(options["role"], options["unit"], options["data-dir"], options["listen"], options["mqtt"], options["pigpio"], options["config"])


class OrderedServices(MultiService):
    """A MultiService that stops its children one at a time, last started first.

    ``hardware`` holds the unit's drivers for the job manager.

    ``MultiService`` stops them all at once, which would let the hardware go
    while the jobs are still putting it in a safe state.
    """

    async def _stop_in_order(self) -> None:
        for service in reversed(list(self)):
            await maybeDeferred(service.stopService)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_in_order())


def make_fanout(reactor: Any, config: Config, signer: Signer | None = None) -> FanOut:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=config.get_float("appliance", "fanout_timeout_seconds")))
    return FanOut(
        http,
        reactor,
        UnitAddresses.from_config(config),
        timeout=config.get_float("appliance", "fanout_timeout_seconds"),
        post_timeout=config.get_float("appliance", "fanout_post_timeout_seconds"),
        concurrency=config.get_int("appliance", "fanout_concurrency"),
        poll_interval=config.get_float("appliance", "fanout_poll_interval_seconds"),
        pool=pool,
        signer=signer,
    )


def mqtt_connector(reactor: Any, config: Config, host: str, port: int) -> Connector:
    """Each job gets a broker connection of its own, so its will can say ``lost`` for it alone."""
    username = config.get("mqtt", "username") or None

    def connect(client_id: str, will: Will) -> tuple[MqttClient, Any]:
        client = MqttClient(
            reactor,
            host,
            port,
            client_id,
            will=will,
            username=username,
            password=config.get("mqtt", "password") if username else None,
            keepalive=config.get_int("mqtt", "keepalive_seconds"),
        )
        client.startService()
        return client, client.stopService

    return connect


class LocalCache(Service):
    """Closes the unit's persistent cache after the jobs stopped writing to it."""

    def __init__(self, cache: PersistentCache) -> None:
        self.cache = cache

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.cache.close()


def build_service(settings: Settings, reactor: Any, environ: Mapping[str, str] = os.environ) -> OrderedServices:
    config = settings.config
    top = OrderedServices()
    leader = settings.role == "leader"

    db = None
    if leader:
        db = Database(settings.data_dir / DATABASE_NAME, reactor)
        db.setName("database")
        db.setServiceParent(top)

    hardware_connection = PigpioConnection(reactor, *settings.pigpio)
    hardware_connection.setName("hardware")
    hardware_connection.setServiceParent(top)
    # Building the drivers registers each output's safe state: off on every connection and at stop.
    top.hardware = Hardware.build(hardware_connection, HardwareSettings.from_config(config), reactor)
    heater_guard = HeaterGuard(top.hardware.heater, top.hardware.temperature, reactor)
    heater_guard.setName("heater_guard")
    heater_guard.setServiceParent(top)

    host, port = settings.mqtt
    username = config.get("mqtt", "username") or None
    mqtt = MqttClient(
        reactor,
        host,
        port,
        f"appliance-{settings.unit}",
        username=username,
        password=config.get("mqtt", "password") if username else None,
        keepalive=config.get_int("mqtt", "keepalive_seconds"),
        clean_session=not leader,
    )
    mqtt.setName("mqtt")
    mqtt.setServiceParent(top)

    ingest = None
    if leader:
        assert db is not None
        # Its own connection: a persistent session, acknowledged only after each commit.
        ingest_mqtt = MqttClient(
            reactor,
            host,
            port,
            ingest_client_id(settings.unit),
            username=username,
            password=config.get("mqtt", "password") if username else None,
            keepalive=config.get_int("mqtt", "keepalive_seconds"),
            clean_session=False,
            manual_ack=True,
        )
        ingest = IngestService(ingest_mqtt, db, reactor, IngestSettings.from_config(config))
        ingest.setName("ingest")
        ingest.setServiceParent(top)  # after the database: it stops first, storing what it has

    cache = LocalCache(PersistentCache(settings.data_dir / LOCAL_CACHE_NAME, reactor))
    cache.setName("local_cache")
    cache.setServiceParent(top)
    policy = build_policy(settings.unit, settings.data_dir, config, reactor)
    # Every unit has a fan-out client: the leader reaches the units with it, and a unit asks the leader its experiment.
    signer = None if policy.verifier is None else Signer(policy.verifier.secret, reactor)
    fanout = make_fanout(reactor, config, signer)
    jobs = JobManager(
        Registry.from_plugins(),
        reactor,
        settings.unit,
        config.leader_hostname,
        config,
        top.hardware,
        UnitState(cache.cache),
        settings.data_dir,
        mqtt_connector(reactor, config, host, port),
        start_at_boot=("monitor",),  # its $state (and its connection's will) tells the UI the unit is up
        leader_services=LeaderServices(fanout, db) if leader else None,  # the experiment-profile runner's
    )
    jobs.setName("jobs")
    jobs.setServiceParent(top)

    tasks = TaskRegistry(
        reactor,
        settings.unit,
        config.get_int("appliance", "task_results_max_count"),
        config.get_float("appliance", "task_results_max_age_seconds"),
    )
    tasks.setName("tasks")
    tasks.setServiceParent(top)

    fanout.setName("fanout")
    fanout.setServiceParent(top)
    descriptors = Descriptors(settings.data_dir)
    commands = CommandRunner(reactor, reactor)
    system = SystemApi(commands, tasks, reactor, SystemSettings.from_config(config), settings.data_dir, policy.limits)
    config_writing = DeferredLock()  # one writer at a time for the data directory's config files
    bioreactor = Bioreactor(cache.cache, config, model_of(config), settings.unit)
    families: list[Any] = [
        UnitInfoApi(settings.unit, reactor, broker=mqtt, pigpiod=hardware_connection, local_cache=cache.cache, database=db, ingest=ingest),
        TaskResultsApi(tasks),
        ConfigApi(settings.data_dir, config, config_writing),
        FilesApi(settings.data_dir, tasks, config.get_int("appliance", "served_file_max_bytes")),
        JobsApi(
            jobs,
            tasks,
            mqtt,
            bioreactor,
            reactor,
            descriptors,
            settings.unit,
            hardware_connection,
            Hat.from_config(config),
            leader_experiment(fanout, config.leader_hostname, settings.unit),
        ),
        system,
        CalibrationsApi(settings.data_dir, jobs.unit_state.cache, settings.unit, policy.limits),
        CalibrationSessionsApi(
            CalibrationSessions(
                Bench(
                    settings.unit,
                    reactor,
                    config,
                    top.hardware,
                    jobs,
                    settings.data_dir,
                    jobs.unit_state.cache,
                    SessionSettings.from_config(config),
                ),
                tasks,
                core_protocols(config),
            )
        ),
        BackupsApi(
            settings.data_dir,
            tasks,
            settings.unit,
            config.leader_hostname,
            policy.limits,
            restart=system.restart_soon,
            keep_backups=config.get_int("appliance", "import_backups_kept"),
        ),
        PluginsApi(
            settings.data_dir,
            commands,
            tasks,
            jobs.registry,
            PluginSettings.from_config(config),
            config.get_int("appliance", "served_file_max_bytes"),
        ),
    ]
    fallbacks: dict[str, ApiError] = {}
    if leader:
        assert db is not None
        leader_cache = LeaderCache(reactor, config.get_float("appliance", "leader_cache_seconds"))
        families += [
            ExperimentsApi(db, reactor, tasks, fanout, settings.unit),
            WorkersApi(db, reactor, tasks, fanout, mqtt, settings.unit, Discovery.from_config(reactor, config), addresses=fanout.addresses),
            CatalogApi(db),
            UnitsApi(db, tasks, fanout, settings.unit),
            ClusterSystemApi(
                db,
                tasks,
                fanout,
                settings.unit,
                settings.data_dir,
                config.get_float("system", "update_timeout_seconds"),
                uploads_kept=config.get_int("appliance", "uploads_kept"),
            ),
            UnitArchivesApi(
                db,
                fanout,
                policy.limits,
                settings.unit,
                archive_timeout=config.get_float("appliance", "fanout_archive_timeout_seconds"),
                import_timeout=config.get_float("appliance", "fanout_import_timeout_seconds"),
            ),
            UnitJobsApi(db, tasks, fanout, mqtt, reactor, descriptors, settings.unit),
            ConfigFilesApi(db, fanout, reactor, settings.data_dir, settings.unit, config_writing, leader_cache),
            WorkerSetupApi(
                db, fanout, reactor, settings.data_dir, config_writing, config.get_float("appliance", "worker_setup_step_seconds")
            ),
            WorkerCalibrationsApi(db, tasks, fanout, leader_cache),
            UnitPluginsApi(
                db, tasks, fanout, leader_cache, settings.data_dir, settings.unit, PluginSettings.from_config(config).timeout
            ),
            LeaderUiApi(descriptors, bioreactor, Path(config.get_str("appliance", "local_access_point_flag"))),
            LogsApi(db, mqtt, reactor),
            TimeSeriesApi(db, reactor, cache_rows=config.get_int("time_series", "cache_rows")),
            ExperimentProfilesApi(settings.data_dir, db, jobs),
            DatasetsApi(
                db,
                reactor,
                tasks,
                settings.data_dir,
                keep=config.get_int("appliance", "exports_kept"),
                max_age_seconds=config.get_float("appliance", "exports_max_age_days") * 86400,
            ),
        ]
    else:
        fallbacks["/api"] = ApiError(
            404,
            "Not found: /api is served by the leader only.",
            cause=f"{settings.unit} is a worker; its own API is /unit_api.",
            remediation=f"Use /unit_api on this unit, or send /api requests to the leader ({config.leader_hostname}).",
        )

    families += api_documents(families, leader)  # extended in place: each document lists itself too
    site = make_site(Router(families, fallbacks, policy), policy.limits)
    http = StreamServerEndpointService(serverFromString(reactor, settings.listen), site)
    http._raiseSynchronously = True
    http.setName("http")
    http.setServiceParent(top)
    notifier = SystemdNotifier.from_environ(environ, reactor)
    if notifier is not None:  # last, so READY=1 goes out with the port open, and STOPPING=1 first
        notifier.setName("systemd")
        notifier.setServiceParent(top)
    return top


def makeService(options: usage.Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor
    return build_service(Settings.from_options(options), reactor)
