"""The leader's SQLite database: one writer thread, and a few reader threads.

SQLite calls block, so none may run on the reactor thread. Writes go through
:meth:`Database.run`, which queues them on a single-thread pool: one
connection, one thread, so writes are serialised without locks and the
connection (opened with ``check_same_thread``) cannot be used anywhere else.
Reads that may be long (time series, logs, exports) go through
:meth:`Database.read` instead: WAL lets each reader thread's own read-only
connection see the last committed state while the writer goes on, so a busy
ingest never delays a chart, and a big export never delays the ingest.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..errors import ApiError
from ..threads import OwnedThreadPool
from .migrations import migrate

T = TypeVar("T")

BUSY_TIMEOUT_MS = 15_000


def _row_as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    """Rows come back as column-keyed dicts, ready to be JSON."""
    return {column[0]: value for column, value in zip(cursor.description, row)}


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection that can only read; one per reader thread, used by that thread alone.

    Not ``check_same_thread``: the writer thread closes it once the reader threads are gone.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = _row_as_dict
    conn.execute("PRAGMA query_only = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def open_connection(path: Path) -> sqlite3.Connection:
    """Open and configure a connection; call on the database thread only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are ours (see Database._transaction), not the module's.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.row_factory = _row_as_dict
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA recursive_triggers = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class Database(Service):
    """Owns the connection and the one thread that may use it."""

    log = Logger()

    def __init__(self, path: Path, reactor: Any, readers: int = 2) -> None:
        self.path = path
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        self._readers = readers
        self._read_pool: ThreadPool | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._conn: sqlite3.Connection | None = None
        self.open_error: BaseException | None = None
        self.opened: Deferred[None] | None = None  # fires once opening is over, failed or not

    def startService(self) -> None:
        super().startService()
        self._pool = OwnedThreadPool(self._reactor, 1, 1, "pioreactor-sqlite")
        self._pool.start()
        self._read_pool = OwnedThreadPool(self._reactor, 1, self._readers, "pioreactor-sqlite-read")
        self._read_pool.start()
        self.opened = self._submit(self._open)
        self.opened.addErrback(self._open_failed)

    def _open(self) -> None:
        conn = open_connection(self.path)
        try:
            migrate(conn, str(self.path))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_failed(self, failure: Failure) -> None:
        """Keep serving (every query answers 503 with the reason) rather than die without a word."""
        self.open_error = failure.value
        self.log.failure("The database {path} could not be opened", failure, path=str(self.path))

    def _submit(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        if self._pool is None:
            raise RuntimeError("the database service is not running")
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` on the database thread in one transaction (rolled back if it raises)."""
        return self._submit(self._transaction, fn, args, True)

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``fn(conn, *args)`` on a reader thread, in one read transaction (a consistent snapshot).

        ``conn`` is read-only: a write raises. A read asked for while the
        database is still opening waits for it.
        """
        if self._read_pool is None or self.opened is None:
            raise RuntimeError("the database service is not running")
        pool = self._read_pool
        ready: Deferred[None] = Deferred()

        def pass_on(result: Any) -> Any:
            ready.callback(None)
            return result

        self.opened.addBoth(pass_on)  # fires at once if opening is over; the result passes on untouched
        return ready.addCallback(lambda _: deferToThreadPool(self._reactor, pool, self._read_transaction, fn, args))

    def _read_transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._connection()  # the writer's state: 503 with the reason when the file could not be opened
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = open_reader(self.path)
            self._reader_local.conn = conn
            self._reader_connections.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.rollback()

    def run_without_foreign_keys(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Like :meth:`run`, for ingest of rows whose experiment may not exist (``$experiment`` logs)."""
        return self._submit(self._transaction, fn, args, False)

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...], foreign_keys: bool) -> T:
        conn = self._connection()
        if not foreign_keys:
            conn.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result
        finally:
            if not foreign_keys:
                conn.execute("PRAGMA foreign_keys = ON")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ApiError(
                503,
                "The database is unavailable.",
                cause=f"{self.path} could not be opened: {self.open_error}" if self.open_error else "The database is not open.",
                remediation="Check the leader's log for the reason, fix it and restart the appliance.",
            )
        return self._conn

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._pool is None:
            return None
        pool, self._pool = self._pool, None
        readers, self._read_pool = self._read_pool, None
        # Queued behind all earlier writes; it waits for running reads there, not on the reactor thread.
        closed = deferToThreadPool(self._reactor, pool, self._close, readers)

        def stop_pool(result: Any) -> Any:
            pool.stop()
            return result

        return closed.addBoth(stop_pool)

    def _close(self, readers: ThreadPool | None) -> None:
        if readers is not None:
            readers.stop()
        for reader in self._reader_connections:
            reader.close()  # their threads are gone, so closing from here cannot race a read
        self._reader_connections.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
