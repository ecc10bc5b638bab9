"""A second process that reads pages, so a large crawl uses a second CPU core.

Scrapy runs a crawl on one thread. Most of what newsmon adds to each download is reading the
page (lxml's parse, the selectors, text cleaning, the date, the content hash), and that is a pure
function of the page and the source's settings. Past a number of article pages in one crawl, the
spider starts one `PageWorker` and hands it each article page, and each listing page once it is
ready; the reactor goes on downloading while the worker reads. A thread would not do: the GIL
serializes the Python half of the work, and a threaded version measured slower than none.

The worker only ever speeds things up. Until it is ready, when it cannot start, and once it
dies, stops answering or fails on a page, a page is read in the crawl's own process exactly as
before (`WorkerUnavailable` tells the caller so). The parent keeps every page until its answer
arrives, so nothing is lost with the worker.

A new interpreter, not a fork: a forked child shares the crawl's memory only until the crawl
writes it, and the crawl rewrites its heap all the time, so a fork soon costs as much memory as
the crawl itself (measured: 35 MB). The new one imports only what reading needs (lxml, parsel,
newsmon's extract and normalize modules; never Scrapy, Twisted or asyncio: its side of the
socket is scraper/worker_process.py), about 20 MB. It runs in its own session, so Ctrl-C reaches
only the crawl, which closes the socket; the worker exits at the end of its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from scraper.worker_process import ENTRY, FRAME, READY

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class WorkerUnavailable(Exception):
    """The worker cannot answer for this page: read it in the crawl's own process."""


class PageWorker:
    """One worker process that applies a handler to payloads sent from the reactor's thread.

    The worker imports `factory` ("module:function") and calls it once with `setup`; what that
    returns is the handler, called with each payload. Payloads, `setup` and answers are pickled.
    """

    def __init__(self, factory: str, setup: Any, timeout: float = 60.0) -> None:
        self.factory, self.setup, self.timeout = factory, setup, timeout
        self.ready = False
        self.answered = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._keys = itertools.count()
        self._watchdog: asyncio.TimerHandle | None = None
        self.stopped = False  # started once and gone since: failed to start, died, closed
        self._outbox: list[bytes] = []
        self._stderr: IO[bytes] | None = None
        self.last_words = ""  # the last line the worker wrote to stderr, once it is gone
        self._last_answer = 0.0

    async def start(self) -> bool:
        """Start the worker; False (and a log line) when it cannot be started. Pages sent before
        it is ready are refused (WorkerUnavailable), not queued."""
        if self.stopped or os.name != "posix" or not sys.executable:  # closed before it began
            self.stopped = True
            return False
        ends: list[socket.socket] = []
        try:
            parent, child = ends = list(socket.socketpair())
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed once gone
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")))
            )}  # fmt: skip
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", ENTRY, str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
            )
            child.close()
            self._socket = parent
            reader, self._writer = await asyncio.open_unix_connection(sock=parent)
            self._reading = asyncio.ensure_future(self._read_answers(reader))
            level = logging.getLogger().getEffectiveLevel()
            self._send(READY, (self.factory, self.setup, level), urgent=True)
        except Exception as exc:  # anything (no sockets, files or processes left): read in-process
            logger.warning("could not start a page worker (%s); reading pages in-process", exc)
            for end in ends:
                end.close()
            self._writer, self.stopped = None, True
            if self._process is not None:
                self._process.kill()
                self._process.wait()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            return False
        if self.stopped:  # closed while it started (the crawl ended first): end it now
            self._shut_down(kill=True)
            return False
        self._pending[READY] = (asyncio.get_running_loop().create_future(), self._now())
        self._arm_watchdog()
        logger.debug("page worker started (pid %d)", self._process.pid)
        return True

    async def run(self, payload: Any, urgent: bool = False) -> Any:
        """The handler's answer for `payload`, computed in the worker. An urgent payload is
        handled before every payload that is waiting there, urgent ones excepted."""
        if not self.ready or self._writer is None:
            raise WorkerUnavailable("the page worker is not ready")
        key = next(self._keys)
        try:
            self._send(key, payload, urgent)
        except Exception as exc:  # a payload that does not pickle: read it in-process
            raise WorkerUnavailable(f"cannot send the page ({exc})") from None
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = (answer, self._now())
        self._arm_watchdog()
        status, value = await answer
        if status != "ok":
            raise WorkerUnavailable(value)
        self.answered += 1
        return value

    def _send(self, key: int, payload: Any, urgent: bool = False) -> None:
        """Queue a message; the messages of one turn of the event loop go in one write (pages
        arrive several at a time, and each write wakes the worker)."""
        data = pickle.dumps((key, urgent, payload), protocol=pickle.HIGHEST_PROTOCOL)
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox += (FRAME.pack(len(data)), data)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._writer is not None:
            self._writer.write(b"".join(frames))

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
                key, (status, value, records) = pickle.loads(await reader.readexactly(size))
                self._last_answer = self._now()
                for record in records:
                    found = logging.getLogger(record.name)
                    if found.isEnabledFor(record.levelno):  # handle() itself does not ask
                        found.handle(record)
                entry = self._pending.pop(key, None)
                if key == READY:
                    if status != "ok":
                        raise RuntimeError(value)
                    self.ready = True
                    logger.debug("page worker ready")
                elif entry is not None and not entry[0].done():
                    entry[0].set_result((status, value))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # EOF, a broken socket, a failed set-up, an unreadable answer
            self._stop(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.timeout, self._check_stuck)

    def _check_stuck(self) -> None:
        self._watchdog = None
        if not self._pending:
            return
        # A page queued behind others waits for them: the worker is stuck when nothing has been
        # answered for `timeout` seconds while pages wait, not when one page waited that long.
        oldest = min(sent for _, sent in self._pending.values())
        late = self._now() - max(oldest, self._last_answer)
        if late >= self.timeout:
            self._stop(f"no answer within {self.timeout:g} s")
        else:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.timeout - late, self._check_stuck)

    def _stop(self, reason: str) -> None:
        running = self._writer is not None
        self._shut_down(kill=True)
        if running:
            said = f"; it said: {self.last_words}" if self.last_words else ""
            logger.warning("page worker stopped (%s%s); reading pages in-process", reason, said)

    def close(self) -> None:
        """End the worker (it exits at the end of its input); pages still waiting for an answer
        are read in-process by their callers."""
        if self._writer is not None:
            logger.debug("page worker read %d pages", self.answered)
        self._shut_down(kill=False)

    def _shut_down(self, kill: bool) -> None:
        writer, self._writer = self._writer, None
        self.ready, self.stopped = False, True
        if writer is None:
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, {}
        for answer, _ in pending.values():
            if not answer.done():
                answer.set_result(("gone", "the page worker stopped"))
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        if self._socket is not None:
            # Now, not when the transport gets round to it: the worker exits at the end of its
            # input, and the reactor may stop before the transport closes.
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        writer.close()
        if self._process is not None:
            if kill:
                self._process.kill()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            self.last_words = lines[-1].strip() if lines else ""
            self._stderr.close()
            self._stderr = None
