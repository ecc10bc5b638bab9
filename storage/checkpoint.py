"""WAL checkpoints on a thread of their own, so the writer does not wait for one at each commit.

SQLite runs an automatic checkpoint inside the COMMIT that takes the WAL past 1,000 pages: the
committing thread copies those pages into the database file and syncs it. For a crawl that thread
is the reactor, and every download waits. SQLite's documentation suggests the alternative used
here: the writer's automatic checkpoint is raised to a backstop, and a second connection on
another thread runs a PASSIVE checkpoint after the writer's commits. Python's sqlite3 module
releases the GIL while SQLite works, and a PASSIVE checkpoint never blocks the writer or readers;
it copies what no reader still needs, and the writer restarts the WAL once everything is copied.

Anything that keeps the thread from running (no thread can be started, the file cannot be
opened) leaves the writer checkpointing by itself, as SQLite does by default.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

# The writer's own automatic checkpoint while the thread runs: only if the thread falls far behind
# (a reader holding an old snapshot for minutes) does a commit checkpoint by itself again.
BACKSTOP_PAGES = 10_000
# SQLite's default, restored when the thread stops.
DEFAULT_PAGES = 1_000


class WalCheckpointer:
    """Checkpoints one database file on a daemon thread, when asked after a commit."""

    def __init__(self, path: Path, writer: sqlite3.Connection) -> None:
        self.path = path
        self.writer = writer
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unavailable = False
        self.checkpoints = 0

    def request(self) -> None:
        """Ask for a checkpoint soon; requests made while one runs are served by the next.

        Called after a commit: it never raises, since what was committed is stored either way.
        """
        if self._thread is None and not self._unavailable:
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        try:
            # mode=rw: never create a file. If the database was moved away since the writer
            # opened it, a new empty file here would take over its WAL.
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=rw", uri=True, check_same_thread=False
            )
        except sqlite3.Error as exc:
            self._give_up(f"cannot open {self.path}: {exc}")
            return
        thread = threading.Thread(
            target=self._run, args=(conn,), name=f"checkpoint {self.path}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no more threads (a pids limit, interpreter shutdown)
            conn.close()
            self._give_up(str(exc))
            return
        self._thread = thread
        with contextlib.suppress(sqlite3.Error):
            self.writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")

    def _give_up(self, reason: str) -> None:
        self._unavailable = True
        logger.debug("no checkpoint thread for %s (%s); the writer checkpoints", self.path, reason)

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # busy or gone: the next request tries again
                    logger.debug("checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and give the writer back its
        automatic checkpoint; closing the last connection checkpoints what is left."""
        thread, self._thread = self._thread, None
        self._unavailable = True  # a closed archive does not start another thread
        if thread is None:
            return
        self._stopping = True
        self._wanted.set()
        if thread is not threading.current_thread():  # a finalizer may run on the thread itself
            thread.join()
        # The writer may be closed already, or belong to another thread (a finalizer).
        with contextlib.suppress(sqlite3.Error):
            self.writer.execute(f"PRAGMA wal_autocheckpoint = {DEFAULT_PAGES}")
