"""SQLite under the async engines, run in the event loop's own thread.

aiosqlite gives each connection a thread and sends it every call: a statement is four round
trips (cursor, execute, fetch, close), a small transaction a dozen, and each one wakes the
event loop from another thread. A statement on a local SQLite file takes a few
microseconds, less than one such trip. This driver runs statements where they are awaited.

One call can wait long: taking the write lock (a BEGIN IMMEDIATE, or a first write) while
another connection holds it. Done in the event loop's thread, that wait would stop the task
holding the lock from ever releasing it if both belong to this process. So:

- The writers of one engine take turns in the process (`WriteQueue`): a BEGIN IMMEDIATE
  first waits, without blocking the loop, until the engine's previous writer has committed
  or rolled back, and writers go in the order they asked. SQLite's own wait for a busy lock
  polls with sleeps of up to 100 ms, which under load left the lock idle while writers slept,
  and ran each wait in a thread.
- Connections have a busy timeout of 0: a statement that still finds the lock taken (by
  another process, or another engine on the same file) fails at once, and is then run again
  in a thread of `LOCK_WAITERS`, with the busy timeout, while the event loop carries on. A
  connection that holds the lock never goes there, so the lock's holder never waits for a
  waiter's thread. A task cancelled while its statement waits there is cancelled once the
  statement has finished: until then the connection is in use by that thread, and rolling
  it back or closing it meanwhile would race with it (and leave the lock taken for good once
  the statement got it).

It plugs into SQLAlchemy's aiosqlite dialect (`sqlite+aiosqlite://` URLs) through
`create_async_engine(async_creator=...)`: the dialect sees an object with aiosqlite's
interface.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Threads for statements waiting for the write lock, each held until the lock is free: more
# than the connections a process's pools open at once. The lock's holder never needs one,
# so should they all be taken, further waiters only queue.
LOCK_WAITERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sqlite-lock-wait")

_Result = tuple[Any, int, Any, list[Any]]  # description, rowcount, lastrowid, rows


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(error)


class WriteQueue:
    """The connections of one engine that want the write lock, served one at a time in the
    order they asked: a BEGIN IMMEDIATE first waits here, so that this process's writers take
    turns without polling SQLite for the lock; the lock is handed on the moment its holder
    commits or rolls back. Only a holder in another process (or engine) makes a writer wait
    in a lock waiter's thread."""

    def __init__(self, patience_seconds: float) -> None:
        self._patience = patience_seconds
        # asyncio locks belong to one event loop; tests run several loops in one process
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def join(self) -> asyncio.Lock:
        """Wait for this connection's turn (as long as the busy timeout); the lock to
        release when its transaction ends."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        if lock.locked():
            try:
                async with asyncio.timeout(self._patience):
                    await lock.acquire()
            except TimeoutError:
                raise sqlite3.OperationalError("database is locked") from None
        else:
            await lock.acquire()
        return lock


class Connection:
    """An aiosqlite-like connection over a sqlite3 connection in autocommit mode (the engine
    issues BEGIN itself)."""

    def __init__(
        self, connection: sqlite3.Connection, busy_timeout_ms: int, queue: WriteQueue
    ) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._busy_timeout_ms = busy_timeout_ms
        self._queue = queue
        self._turn: asyncio.Lock | None = None  # held from BEGIN IMMEDIATE to its end

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    async def run(self, call: Callable[[sqlite3.Connection], T], *, writes: bool = False) -> T:
        """call(connection) here; in a lock waiter's thread, with the busy timeout, if the
        write lock is taken. A call that `writes` (BEGIN IMMEDIATE) first waits for its turn
        among this engine's writers."""
        connection = self._live()
        if writes and self._turn is None:
            self._turn = await self._queue.join()
        try:
            return await self._run(connection, call)
        finally:
            if self._turn is not None and not connection.in_transaction:
                self._end_turn()

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()

    async def _run(
        self, connection: sqlite3.Connection, call: Callable[[sqlite3.Connection], T]
    ) -> T:
        try:
            return call(connection)
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
        waiting = asyncio.get_running_loop().run_in_executor(
            LOCK_WAITERS, self._waiting, connection, call
        )
        cancelled = False
        while not waiting.done():
            try:
                await asyncio.wait([waiting])
            except asyncio.CancelledError:
                # The statement goes on in its thread: the connection is not to be used
                # (rolled back, closed, given to another task) before it has finished.
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return waiting.result()

    def _waiting(
        self, connection: sqlite3.Connection, call: Callable[[sqlite3.Connection], T]
    ) -> T:
        connection.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}").close()
        try:
            return call(connection)
        finally:
            connection.execute("PRAGMA busy_timeout=0").close()

    @property
    def in_transaction(self) -> bool:
        return self._live().in_transaction

    def cursor(self) -> Cursor:
        return Cursor(self)

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        cursor = Cursor(self)
        await cursor.execute(sql, parameters)
        return cursor

    async def commit(self) -> None:
        await self.run(lambda connection: connection.commit())

    async def rollback(self) -> None:
        await self.run(lambda connection: connection.rollback())

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._live().create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._end_turn()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


class Cursor:
    """A cursor whose execute runs the statement, reads all its rows and closes the sqlite3
    cursor in one call; fetching then reads what was kept."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None
        self._rows: list[Any] = []
        self._next = 0

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        def call(connection: sqlite3.Connection) -> _Result:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, parameters)
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        self._keep(await self._connection.run(call, writes=sql.startswith("BEGIN IMMEDIATE")))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        def call(connection: sqlite3.Connection) -> _Result:
            cursor = connection.cursor()
            try:
                cursor.executemany(sql, parameters)
                return cursor.description, cursor.rowcount, cursor.lastrowid, []
            finally:
                cursor.close()

        self._keep(await self._connection.run(call))
        return self

    def _keep(self, result: _Result) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows = result
        self._next = 0

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        taken = self._rows[self._next : self._next + (size or self.arraysize)]
        self._next += len(taken)
        return taken

    async def fetchall(self) -> list[Any]:
        taken = self._rows[self._next :]
        self._next = len(self._rows)
        return taken

    async def close(self) -> None:
        self._rows = []


def creator(
    database: str, busy_timeout_ms: int, **connect_args: Any
) -> Callable[[], Awaitable[Connection]]:
    """create_async_engine's async_creator: connections to database (as sqlite3.connect takes
    it, with connect_args such as uri) in WAL mode with foreign keys on."""
    connect_args = {
        **connect_args,
        "timeout": 0,
        "isolation_level": None,
        "check_same_thread": False,  # a lock waiter's thread uses it too, never at once
    }
    queue = WriteQueue(busy_timeout_ms / 1000)

    async def connect() -> Connection:
        connection = Connection(sqlite3.connect(database, **connect_args), busy_timeout_ms, queue)

        def configure(raw: sqlite3.Connection) -> None:
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                raw.execute(f"PRAGMA {pragma}").close()

        await connection.run(configure)
        return connection

    return connect
