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
from collections.abc import Callable
from typing import IO, Any

FRAME = struct.Struct("!I")  # each message: its length, then a pickle
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
    incoming = sock.makefile("rb")
    handler: Callable[[Any], Any] | None = None
    while True:
        message = _read_message(incoming)
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
        try:
            data = pickle.dumps((key, (*answer, records)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer that does not pickle fails its page only
            failed = ("failed", f"cannot send the answer ({exc})", [])
            data = pickle.dumps((key, failed), protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(FRAME.pack(len(data)) + data)


def _read_message(incoming: IO[bytes]) -> Any:
    """The next message, or None at the end of input. A buffered read returns all it was asked
    for unless the input ends first."""
    header = incoming.read(FRAME.size)
    if len(header) < FRAME.size:
        return None
    (size,) = FRAME.unpack(header)
    body = incoming.read(size)
    return pickle.loads(body) if len(body) == size else None
