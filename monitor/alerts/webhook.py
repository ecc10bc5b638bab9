"""webhook channel: POST each alert (or a digest) as JSON to an http(s) endpoint.

urllib.request, not requests: a single POST needs no extra dependency, and this keeps
the channel independent of what apprise happens to pull in.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from monitor.alerts.base import (
    Channel,
    ChannelConfigError,
    DeliveryError,
    clean_text,
    redact_url,
    url_secrets,
)

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BASE_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "newsmon-alerts",
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST was not accepted; following it could replay it as a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookChannel(Channel):
    """Any 2xx is delivered; everything else is a DeliveryError naming only the redacted URL."""

    kind = "webhook"
    options = {"url": str, "timeout": (int, float), "headers": dict}
    required = ("url",)

    def __init__(
        self,
        *,
        url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self._url, auth = _split_credentials(url)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ChannelConfigError("`timeout` must be a number of seconds > 0", "timeout")
        self.timeout = float(timeout)
        self._headers = {**_BASE_HEADERS, **auth, **_check_headers(headers or {})}
        self._raw_url = url

    def describe(self) -> str:
        return f"webhook {redact_url(self._url)}"

    def secrets(self) -> Iterable[str]:
        extra = {v for k, v in self._headers.items() if k not in _BASE_HEADERS}
        return url_secrets(self._raw_url) | url_secrets(self._url) | extra

    def send(self, payloads: list[dict]) -> None:
        body, key = self._body(payloads)
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={**self._headers, "Idempotency-Key": key}
        )
        try:
            # timeout bounds each socket operation (connect, each read), not the total.
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            reason = clean_text(exc.reason)[:100]
            raise DeliveryError(
                self.redact(f"{self.describe()}: HTTP {exc.code} {reason}")
            ) from None
        except urllib.error.URLError as exc:
            reason = clean_text(exc.reason)[:200]
            raise DeliveryError(self.redact(f"{self.describe()}: {reason}")) from None
        except OSError as exc:
            detail = clean_text(exc)[:200] or type(exc).__name__
            raise DeliveryError(self.redact(f"{self.describe()}: {detail}")) from None
        except (http.client.HTTPException, ValueError) as exc:
            # These can quote the request URL (e.g. InvalidURL): report only their type.
            raise DeliveryError(f"{self.describe()}: {type(exc).__name__}") from None

    def _body(self, payloads: list[dict]) -> tuple[bytes, str]:
        """One alert posts its payload; a digest posts `{"digest": true, ...}`."""
        ids = [str(p.get("alert_id")) for p in payloads]
        if self.digest:
            doc: dict = {"digest": True, "alert_ids": ids, "items": payloads}
            key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        else:
            doc, key = payloads[0], ids[0]
        return json.dumps(doc, ensure_ascii=False).encode("utf-8"), key


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """Check http(s); move `user:pass@` into a Basic header (urllib won't use it)."""
    try:
        parts = urlsplit(url.strip())
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise ChannelConfigError("webhook `url` is not a valid URL", "url") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ChannelConfigError("webhook `url` must be an http:// or https:// URL", "url")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if not userinfo:
        return url.strip(), {}
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=hostport)), {"Authorization": f"Basic {token}"}


def _check_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Header names must be tokens and values single-line strings (no header injection)."""
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
            raise ChannelConfigError(f"`headers`: {name!r} is not a valid header name", "headers")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ChannelConfigError(f"`headers.{name}` must be a single-line string", "headers")
        checked[name] = value
    return checked
