"""The leader's ingest: the jobs' MQTT data, stored in SQLite in batches, with nothing lost on a restart.

Durability comes from the broker. The ingest has its own connection with a
persistent session (a fixed client id, ``clean_session`` off) subscribed at
QoS 1, and acknowledges each message only once the transaction holding its row
has committed (paho's ``manual_ack``). So the broker keeps every message until
it is stored: what is published while the leader is down, and what was
received but not yet committed when it died, is delivered when it is back.
Delivery is at least once: a crash between a commit and its acknowledgements
stores those rows twice.

QoS 1 rather than 2: paho keeps the QoS 2 handshake state in memory only, and
would answer a resent PUBREL from before a restart without ever handing over
the message.

Throughput comes from batching: one transaction per ``batch_size`` messages
or per ``flush_interval_ms``, with one ``executemany`` per table, on the
database's writer thread. A batch is also written as soon as no message came
for ``idle_flush_ms``: the broker sends at most ``max_inflight_messages``
unacknowledged messages (20 in mosquitto's default configuration), so a stream
that stops may be waiting for our acknowledgements, not be over. Only one batch is written at a time; messages that
arrive meanwhile make the next one. When ``max_pending`` messages wait (the
database is slow or failing), the ingest stops reading from the broker, and
TCP makes the broker hold the rest, rather than let memory grow. For full
batches, set the broker's ``max_inflight_messages`` to at least twice
``batch_size``, or 0 (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from attrs import define, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import Config
from ..mqtt import Message, MqttClient
from ..store.database import Database
from ..timestamps import iso_utc
from .tables import Written, write_rows
from .topics import TOPIC_FILTERS, Malformed, NoTimezone, Row, row_of

COMPLAINT_INTERVAL = 60.0  # seconds between warnings about bad messages (the rest are counted)
MAX_RETRY_DELAY = 30.0  # seconds between attempts to write a batch the database refused


@frozen
class IngestSettings:
    batch_size: int = 1000
    flush_interval: float = 0.1  # seconds
    max_pending: int = 20_000
    idle_flush: float = 0.005  # seconds

    @classmethod
    def from_config(cls, config: Config) -> IngestSettings:
        return cls(
            batch_size=config.get_int("ingest", "batch_size"),
            flush_interval=config.get_int("ingest", "flush_interval_ms") / 1000,
            max_pending=config.get_int("ingest", "max_pending"),
            idle_flush=config.get_int("ingest", "idle_flush_ms") / 1000,
        )


@define
class IngestCounters:
    """Since the start: what came in, and what became of it."""

    received: int = 0
    rows_stored: int = 0
    skipped: int = 0  # retained (already stored when first published), cleared values, test runs
    malformed: int = 0
    logs_without_timezone: int = 0
    refused_by_database: int = 0
    batches: int = 0
    failed_batches: int = 0


class IngestService(Service):
    """Leader only. Owns its broker connection: it starts it, and stops it once the last batch is stored."""

    log = Logger()

    def __init__(self, mqtt: MqttClient, db: Database, clock: IReactorTime, settings: IngestSettings) -> None:
        self._mqtt = mqtt
        self._db = db
        self._clock = clock
        self._settings = settings
        self.counters = IngestCounters()
        self._batch: list[tuple[Message, Row | None]] = []
        self._writing: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None
        self._due = False  # the flush interval ran out while a batch was being written
        self._arrivals = 0  # messages received since the start: has any come since the last tick?
        self._oldest = 0.0  # when the oldest message waiting came
        self._backing_off = False
        self._retry_delay = settings.flush_interval
        self._paused = False
        self._last_error: str | None = None
        self._last_complaint = float("-inf")
        self._suppressed = 0

    def startService(self) -> None:
        super().startService()
        for topic_filter in TOPIC_FILTERS:
            self._mqtt.subscribe(topic_filter, self._received, qos=1)
        self._mqtt.startService()

    def stopService(self) -> Deferred[None]:
        """Store and acknowledge what was received, then disconnect (the session, and its subscriptions, stay)."""
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._cancel_timer()
        self._backing_off = False
        while self._writing is not None or self._batch:  # a failed batch is not put back once stopping
            if self._writing is None:
                self._flush()
            if self._writing is not None:
                await self._writing
        await self._mqtt.stopService()

    @property
    def pending(self) -> int:
        return len(self._batch)

    def part(self) -> dict[str, Any]:
        """The ``ingest`` entry of ``/unit_api/health``'s ``parts``."""
        c = self.counters
        connection = "connected" if self._mqtt.connected else "not connected to the broker"
        state = (
            f"{connection}; {c.received} messages received, {c.rows_stored} rows stored, {c.skipped} skipped, "
            f"{c.malformed} malformed, {c.logs_without_timezone} logs without a timezone dropped, "
            f"{c.refused_by_database} refused by the database, {self.pending} pending"
        )
        if self._backing_off and self._last_error:
            state += f"; writing fails: {self._last_error}"
        return {"ok": self._mqtt.connected and not self._backing_off, "state": state}

    # --- receiving ----------------------------------------------------------------

    def _received(self, message: Message) -> None:
        if not self.running:
            return  # not acknowledged: the broker delivers it again after the restart
        self.counters.received += 1
        self._arrivals += 1
        if not self._batch:
            self._oldest = self._clock.seconds()
        row = None
        if message.retain:
            self.counters.skipped += 1  # a retained value was stored when it was first published
        else:
            try:
                row = row_of(message.topic, message.payload, iso_utc(self._clock.seconds()))
            except NoTimezone as e:
                self.counters.logs_without_timezone += 1
                self._complain(f"log line on {message.topic} dropped: {e}")
            except Malformed as e:
                self.counters.malformed += 1
                self._complain(f"message on {message.topic} not stored: {e}")
            else:
                if row is None:
                    self.counters.skipped += 1
        self._batch.append((message, row))  # kept even without a row: it is acknowledged in order with the rest
        if len(self._batch) >= self._settings.max_pending and not self._paused:
            self._paused = True
            self._mqtt.pause_reading()
            self.log.warn("Ingest: {n} messages wait for the database; not reading from the broker meanwhile", n=len(self._batch))
        self._maybe_flush()

    def _complain(self, text: str) -> None:
        """Warn about bad messages at most once a COMPLAINT_INTERVAL; a flood is counted, not logged."""
        now = self._clock.seconds()
        if now - self._last_complaint < COMPLAINT_INTERVAL:
            self._suppressed += 1
            return
        self._last_complaint = now
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._suppressed = 0
        self.log.warn("Ingest: {text}{more}", text=text, more=more)

    # --- writing ------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if self._writing is not None or not self._batch or self._backing_off:
            return
        if len(self._batch) >= self._settings.batch_size or self._due:
            self._flush()
        elif self._timer is None and self.running:
            tick = min(self._settings.idle_flush, self._settings.flush_interval)
            self._timer = self._clock.callLater(tick, self._tick, self._arrivals)

    def _tick(self, arrivals: int) -> None:
        """Write the batch if it waited flush_interval, or if no message came since the last tick."""
        self._timer = None
        waited = self._clock.seconds() - self._oldest
        if arrivals == self._arrivals or waited >= self._settings.flush_interval:
            self._due = True
        self._maybe_flush()

    def _retry(self) -> None:
        self._timer = None
        self._backing_off = False
        self._due = True
        self._maybe_flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._cancel_timer()
        self._due = False
        batch, self._batch = self._batch, []
        # A message from an earlier connection was never acknowledged, so the broker sends it again: skip it here.
        session = self._mqtt.session
        batch = [(m, r) for m, r in batch if m.qos == 0 or m.session == session]
        rows = [r for _, r in batch if r is not None]
        d: Deferred[Written] = maybeDeferred(self._db.run_without_foreign_keys, write_rows, rows) if rows else succeed(Written())
        self._writing = d.addCallbacks(self._written, self._write_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        self._writing.addBoth(self._write_over)

    def _written(self, written: Written, batch: list[tuple[Message, Row | None]]) -> None:
        self.counters.batches += 1
        self.counters.rows_stored += written.rows
        self.counters.refused_by_database += len(written.refused)
        for row, why in written.refused:
            self._complain(f"the database refused a row for {row.table}: {why}")
        for message, _ in batch:
            self._mqtt.ack(message)
        self._retry_delay = self._settings.flush_interval
        self._last_error = None

    def _write_failed(self, failure: Failure, batch: list[tuple[Message, Row | None]]) -> None:
        """The transaction failed as a whole (database not open, disk full): keep the batch and try again later."""
        self.counters.failed_batches += 1
        self._last_error = failure.getErrorMessage() or failure.type.__name__
        if not self.running:
            self.log.failure("Ingest: the last {n} messages could not be stored; the broker delivers them again", failure, n=len(batch))
            return  # left unacknowledged: the broker delivers them again after the restart
        self._batch[:0] = batch
        self._backing_off = True
        self.log.failure("Ingest: a batch of {n} messages could not be stored; retrying in {delay:.1f}s", failure, n=len(batch), delay=self._retry_delay)
        self._timer = self._clock.callLater(self._retry_delay, self._retry)
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)

    def _write_over(self, _: Any) -> None:
        self._writing = None
        if self._paused and len(self._batch) < self._settings.max_pending:
            self._paused = False
            self._mqtt.resume_reading()
        self._maybe_flush()


def ingest_client_id(unit: str) -> str:
    """Fixed per leader, so a restarted leader gets back its session and what the broker kept for it."""
    return f"appliance-{unit}-ingest"
