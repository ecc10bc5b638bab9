"""stdout channel: one readable line per alert, for terminals, cron mail and logs."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from monitor.alerts.base import Channel, DeliveryError, alert_line, clean_text, digest_title


class StdoutChannel(Channel):
    """Print `[new] source date Title — url`; fields are cleaned so a title can't emit escapes."""

    kind = "stdout"

    def __init__(self, *, stream: TextIO | None = None, **common: Any) -> None:
        super().__init__(**common)
        self._stream = stream

    def send(self, payloads: list[dict]) -> None:
        """Write all lines in one call, so a digest is not interleaved with other output."""
        lines = [alert_line(p) for p in payloads]
        if self.digest:
            lines.insert(0, clean_text(digest_title(payloads)))
        # Resolved at send time: sys.stdout may be replaced after the channel is built.
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(f"{line}\n" for line in lines))
            stream.flush()
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"stdout: {type(exc).__name__}: {exc}") from None
