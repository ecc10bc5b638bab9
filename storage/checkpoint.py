"""WAL checkpoints on a thread of their own, so the writer never waits for one.

SQLite runs an automatic checkpoint inside the COMMIT that takes the WAL past 1,000 pages: the
committing thread copies those pages into the database file and syncs it. For a crawl that thread
is the reactor, and every download waits. SQLite's documentation suggests the alternative used
here: the writer's automatic checkpoint is raised to a backstop, and a second connection on
another thread runs a PASSIVE checkpoint after the writer's commits. SQLite releases the GIL
while it checkpoints, and a PASSIVE checkpoint never blocks the writer or readers; it copies what
no reader still needs, and the writer restarts the WAL once everything is copied.
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
# SQLite's default, restored when the thread cannot run.
DEFAULT_PAGES = 1_000


class WalCheckpointer:
    """Checkpoints one database file on a daemon thread, when asked after a commit."""

    def __init__(self, path: Path, writer: sqlite3.Connection) -> None:
        self.path = path
        self.writer = writer
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def request(self) -> None:
        """Ask for a checkpoint soon; requests made while one runs are served by the next."""
        if self._thread is None:
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False)
        except sqlite3.Error as exc:  # the writer keeps checkpointing by itself
            logger.debug("no checkpoint thread for %s: %s", self.path, exc)
            return
        self.writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name=f"checkpoint {self.path}", daemon=True
        )
        self._thread.start()

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
        if thread is None:
            return
        self._stopping = True
        self._wanted.set()
        thread.join()
        self._stopping = False
        with contextlib.suppress(sqlite3.ProgrammingError):  # the writer is closed already
            self.writer.execute(f"PRAGMA wal_autocheckpoint = {DEFAULT_PAGES}")
