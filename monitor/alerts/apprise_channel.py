"""apprise channel: any of Apprise's ~100 services (Telegram, Matrix, email, ntfy...) by URL."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from monitor.alerts.base import (
    Channel,
    ChannelConfigError,
    DeliveryError,
    alert_line,
    clean_text,
    digest_title,
    redact_url,
    url_secrets,
)


class AppriseChannel(Channel):
    """Plain-text title and body; exactly one Apprise URL per channel."""

    kind = "apprise"
    options = {"url": str}
    required = ("url",)

    def __init__(self, *, url: str, **common: Any) -> None:
        super().__init__(**common)
        self._url = url
        import apprise  # its ~100 service plugins load only when a channel uses them

        self._apprise = apprise.Apprise()
        with _quiet_apprise():
            added = self._apprise.add(url)
        if not added:
            raise ChannelConfigError(f"`url` is not a valid Apprise URL ({_scheme(url)}…)", "url")
        if len(self._apprise) != 1:
            # One service per channel: a retry after a partial failure would repeat the alert
            # on the services that already got it.
            raise ChannelConfigError("`url` must hold exactly one Apprise URL", "url")
        # Apprise's own privacy form masks the secrets it knows of (tokens in the host...).
        private = self._apprise[0].url(privacy=True).partition("?")[0]
        self._shown = redact_url(private)

    def describe(self) -> str:
        return f"apprise {self._shown}"

    def secrets(self) -> Iterable[str]:
        return url_secrets(self._url, include_host=True)

    def send(self, payloads: list[dict]) -> None:
        title, body = self._message(payloads)
        try:
            ok = self._apprise.notify(title=title, body=body, body_format="text")
        except Exception as exc:
            raise DeliveryError(f"{self.describe()}: {type(exc).__name__}") from None
        if not ok:
            raise DeliveryError(f"{self.describe()}: notification failed (see the apprise log)")

    def _message(self, payloads: list[dict]) -> tuple[str, str]:
        """`[newsmon] new: Title` + date/summary/url; a digest lists one line per alert."""
        if self.digest:
            return digest_title(payloads), "\n".join(alert_line(p) for p in payloads)
        p = payloads[0]
        event = clean_text(p.get("event"))
        if p.get("event") == "source_error":
            title = f"[newsmon] source_error: {clean_text(p.get('source'))}"
            return title, clean_text(p.get("reason")) or "unknown error"
        title = f"[newsmon] {event}: {clean_text(p.get('title')) or '(untitled)'}"
        lines = [
            f"Published: {clean_text(p.get('published')) or 'unknown'}",
            clean_text(p.get("summary")),
            clean_text(p.get("url")),
            f"Source: {clean_text(p.get('source'))}",
        ]
        return title, "\n\n".join(line for line in lines if line)


@contextmanager
def _quiet_apprise() -> Iterator[None]:
    """Apprise logs an unparseable URL verbatim at ERROR; that URL may carry a token."""
    logger = logging.getLogger("apprise")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def _scheme(url: str) -> str:
    scheme, sep, _ = url.strip().partition("://")
    return f"{scheme}://" if sep and scheme.isalnum() and len(scheme) <= 16 else ""
