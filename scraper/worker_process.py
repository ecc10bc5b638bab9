"""The page worker's side of the socket (scraper/workers.py starts it and talks to it).

Kept apart from the parent's side so that the worker imports only this, the handler's module and
what that needs: no asyncio (the parent's streams), no Scrapy, no Twisted. Every module imported
here is start-up time the worker spends while the crawl is already waiting for it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

FRAME = struct.Struct("!I")  # each message: its length, then a pickle of (key, urgent, payload)
READY = -1  # the key of the worker's first message: set up and waiting for pages
# The worker's command line. Past the end of its input it has nothing to write or close, so it
# leaves at once: tearing the interpreter down would keep the crawl waiting for nothing.
ENTRY = (
    "import os, sys; from scraper.worker_process import serve; serve(int(sys.argv[1])); "
    "sys.stderr.flush(); os._exit(0)"
)


class _Collect(logging.Handler):
    """Keeps the worker's log records, made picklable, to travel back with the next answer."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def serve(fd: int) -> None:
    """The worker's main loop, on the socket the parent passed as `fd`, until the parent closes
    it. Its first message names the handler's factory and its argument."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(5)  # where the two share a core, the crawl's thread goes first
    collect = _Collect()
    logging.getLogger().handlers = [collect]
    sock = socket.socket(fileno=fd)
    inbox = _Inbox(sock)
    handler: Callable[[Any], Any] | None = None
    while True:
        message = inbox.next()
        if message is None:  # the parent closed the socket: the crawl is over
            return
        key, payload = message
        try:
            if handler is None:
                factory, setup, level = payload
                logging.getLogger().setLevel(level)  # the parent's: records it would not show
                module, _, name = factory.partition(":")
                handler = getattr(importlib.import_module(module), name)(setup)
                gc.freeze()  # what set-up imported lives as long as the worker: never rescanned
                answer: tuple[str, Any] = ("ok", None)
            else:
                answer = ("ok", handler(payload))
        except Exception as exc:  # the parent reads this page itself and reports what it finds
            answer = ("failed", f"{type(exc).__name__}: {exc}")
        records, collect.records = collect.records, []
        if answer[0] != "ok" and key != READY:
            records = []  # the parent reads the page again, and logs what it finds then
        try:
            data = pickle.dumps((key, (*answer, records)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer that does not pickle fails its page only
            failed = ("failed", f"cannot send the answer ({exc})", [])
            data = pickle.dumps((key, failed), protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(FRAME.pack(len(data)) + data)


class _Inbox:
    """The parent's messages, urgent ones first.

    A listing page's answer is the crawl's next requests, so it must not wait behind the article
    pages sent before it: the crawl waited with nothing to download, half the time for a listing
    page here (measured at its event loop; 0.25 s of a 2,000-article backfill, 0.18 s once
    listing pages went first). Before each page the worker takes in whatever else has arrived,
    without waiting for more.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()
        self.urgent: deque[tuple[int, Any]] = deque()
        self.queued: deque[tuple[int, Any]] = deque()
        self.ended = False

    def next(self) -> tuple[int, Any] | None:
        """The next message to handle, or None once the input has ended and all are handled."""
        self._receive(wait=False)
        while not (self.urgent or self.queued or self.ended):
            self._receive(wait=True)
        if self.urgent:
            return self.urgent.popleft()
        return self.queued.popleft() if self.queued else None

    def _receive(self, wait: bool) -> None:
        while not self.ended:
            try:
                data = self.sock.recv(1 << 18, 0 if wait else socket.MSG_DONTWAIT)
            except BlockingIOError:  # nothing more has arrived
                return
            if not data:  # end of input; a message cut short by it is dropped
                self.ended = True
                return
            self.received += data
            self._split()
            if wait:
                return

    def _split(self) -> None:
        offset, received = 0, self.received
        while len(received) - offset >= FRAME.size:
            (size,) = FRAME.unpack_from(received, offset)
            end = offset + FRAME.size + size
            if len(received) < end:
                break
            key, urgent, payload = pickle.loads(received[offset + FRAME.size : end])
            (self.urgent if urgent else self.queued).append((key, payload))
            offset = end
        del received[:offset]
