"""jsonl channel: append one JSON object per alert to a local file (for scripts, `jq`, tail -f)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monitor.alerts.base import Channel, ChannelConfigError, DeliveryError

# O_RDWR, not O_WRONLY: _ends_mid_line reads the last byte back.
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class JsonlChannel(Channel):
    """Durable append: the row is only marked sent after the line is fsynced."""

    kind = "jsonl"
    options = {"path": str}
    required = ("path",)

    def __init__(self, *, path: str | os.PathLike[str], **common: Any) -> None:
        super().__init__(**common)
        if not str(path).strip():
            raise ChannelConfigError("jsonl channel needs a non-empty `path`", "path")
        self.path = Path(path).expanduser()

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def send(self, payloads: list[dict]) -> None:
        """One write of all lines; mode 0o600 because alerts may be private reading lists."""
        data = "".join(_json_line(p) for p in payloads).encode("utf-8")
        try:
            fd = os.open(self.path, _FLAGS, 0o600)
            try:
                if _ends_mid_line(fd):
                    # A crash mid-write left a partial line: never glue the next one onto it.
                    data = b"\n" + data
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeliveryError(
                f"jsonl {self.path}: {exc.strerror or type(exc).__name__}"
            ) from None


def _json_line(payload: dict) -> str:
    # U+2028/2029 are valid JSON but split lines for some readers (Python's splitlines).
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _ends_mid_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
