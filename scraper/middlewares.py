"""Downloader middlewares: retries that wait, as a polite client should.

Scrapy's RetryMiddleware retries at once and ignores `Retry-After`. `RetryAfterMiddleware`
replaces it (same place in the chain, same settings, same retry counting through
`get_retry_request`, so RETRY_TIMES still bounds every retry) and waits before each retry:

- a 429 or 503 carrying `Retry-After` (delay-seconds or an HTTP date) waits that long, capped at
  RETRY_AFTER_MAX seconds;
- any other retryable answer (RETRY_HTTP_CODES), a timeout or a connection error waits
  RETRY_BACKOFF_BASE seconds, doubling with each retry of the same request, capped at
  RETRY_AFTER_MAX.

The wait is an asyncio sleep on the reactor's loop, and the waiting request keeps the crawl open
(it stays active in the downloader) until it is retried. A `Retry-After` speaks for the whole
site, not one page, so it also holds every other request to the same download slot (host) until
the wait is over; after a backoff, other requests keep flowing meanwhile. A graceful stop
(Ctrl-C, SIGTERM) cuts the wait short and gives up the retry.

`OffsiteRedirectMiddleware` and `OffsiteMetaRefreshMiddleware` take the places of Scrapy's
RedirectMiddleware and MetaRefreshMiddleware and refuse redirects to another site, by HTTP status
and by `<meta http-equiv="refresh">`. Scrapy's OffsiteMiddleware drops such a redirect silently
(no errback, one DEBUG line per domain) and lets it through when the request has `dont_filter`
(page 1 of a listing, revisits); these fail the request with IgnoreRequest instead, so the
spider's errback logs the URL and counts the error. The meta refresh one reads only the pages
that may hold a refresh.

`RequestCountMiddleware` counts requests in place of Scrapy's DownloaderStats (off).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from scrapy.downloadermiddlewares.redirect import MetaRefreshMiddleware, RedirectMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse, Request, Response
from scrapy.settings import BaseSettings
from scrapy.utils.asyncio import call_later, sleep
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import get_meta_refresh, response_status_message
from w3lib.url import safe_url_string

logger = logging.getLogger(__name__)

RETRY_AFTER_CODES = frozenset({429, 503})
_WAIT_STEP = 0.5  # seconds between checks that the crawl is still running during a wait


def parse_retry_after(value: str | bytes | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (RFC 9110 §10.2.3), or None if unreadable.

    `delay-seconds` is a non-negative integer; an HTTP date in the past means "now" (0).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class _Hold:
    """A download slot held for a Retry-After: until when, by which timer of the slot's."""

    slot: Any
    timer: Any  # the slot's latercall while the hold lasts
    until: float  # time.monotonic()


class RetryAfterMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware with waits: Retry-After on 429/503, exponential backoff else.

    Wire it in place of Scrapy's (see settings.py): both on would retry twice per failure.
    """

    def __init__(self, settings: BaseSettings) -> None:
        super().__init__(settings)  # NotConfigured when RETRY_ENABLED is off
        self.max_delay = max(0.0, settings.getfloat("RETRY_AFTER_MAX", 120.0))
        self.backoff_base = max(0.0, settings.getfloat("RETRY_BACKOFF_BASE", 1.0))
        self._holds: dict[str, _Hold] = {}  # by download slot key

    # -- delays -----------------------------------------------------------------------------

    def backoff(self, retry_number: int) -> float:
        """Wait before retry number `retry_number` (1, 2, ...): base, 2×base, 4×base, capped."""
        if self.backoff_base <= 0:
            return 0.0
        exponent = min(max(retry_number - 1, 0), 32)  # 2**32 × base is beyond any cap
        return min(self.backoff_base * 2**exponent, self.max_delay)

    def response_delay(self, response: Response, retry_number: int) -> tuple[float, str]:
        """(seconds, why) before retrying after this response."""
        if response.status in RETRY_AFTER_CODES:
            asked = parse_retry_after(response.headers.get("Retry-After"))
            if asked is not None:
                if asked > self.max_delay:
                    return self.max_delay, f"Retry-After {asked:.0f} s, capped by RETRY_AFTER_MAX"
                return asked, "Retry-After"
        return self.backoff(retry_number), "backoff"

    # -- downloader middleware hooks --------------------------------------------------------

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:  # retries used up: the answer goes on to the spider's errback
            return response
        delay, why = self.response_delay(response, retry.meta["retry_times"])
        if why != "backoff":
            self._hold_slot(request, delay)
        if not await self._wait(request, delay, f"HTTP {response.status}", why):
            return response
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if request.meta.get("dont_retry", False) or not isinstance(
            exception, self.exceptions_to_retry
        ):
            return None
        retry = self._retry(request, exception)
        if retry is None:
            return None  # the exception goes on to the spider's errback
        delay = self.backoff(retry.meta["retry_times"])
        if not await self._wait(request, delay, type(exception).__name__, "backoff"):
            return None
        return retry

    def _hold_slot(self, request: Request, delay: float) -> None:
        """Hold the download slot of `request` (its host) for `delay` seconds.

        Scrapy has no public way to pause a slot (scrapy/scrapy#6660). Its downloader already
        waits for a slot's `latercall` before it sends more from the slot's queue (that is how a
        DOWNLOAD_DELAY waits), so this sets one that resumes the queue after `delay`, through the
        downloader's own `_latercall`. Should Scrapy's internals change, the hold is skipped and
        only the request that got the answer waits.
        """
        if delay <= 0 or not self._crawling():
            return
        try:
            downloader = self.crawler.engine.downloader
            key = downloader.get_slot_key(request)
            slot, resume = downloader.slots.get(key), downloader._latercall
            pending = slot.latercall if slot is not None else None
        except AttributeError:
            return
        if slot is None:
            return
        until = time.monotonic() + delay
        held = self._holds.get(key)
        if held is not None and held.slot is slot and pending is held.timer and held.until >= until:
            return  # held as long already
        if pending is not None:
            pending.cancel()
        slot.latercall = timer = call_later(delay, resume, slot)
        self._holds[key] = _Hold(slot, timer, until)

    def _release_slot(self, request: Request) -> None:
        """End the hold of the slot of `request` now: the crawl is stopping, and what its queue
        holds is sent (Scrapy finishes what is under way), not kept waiting until the hold ends."""
        try:
            downloader = self.crawler.engine.downloader
            held = self._holds.pop(downloader.get_slot_key(request), None)
            if held is not None and held.slot.latercall is held.timer:
                held.timer.cancel()
                downloader._latercall(held.slot)
        except AttributeError:
            return

    async def _wait(self, request: Request, delay: float, reason: str, why: str) -> bool:
        """Sleep `delay` seconds without blocking the reactor; False if the crawl stops first."""
        if delay <= 0:
            return True
        log = logger.info if why != "backoff" else logger.debug
        log("retrying %s in %.1f s (%s, %s)", request.url, delay, reason, why)
        stats = getattr(self.crawler, "stats", None)
        if stats is not None:
            stats.inc_value("retry/delayed_count")
            stats.inc_value("retry/delayed_seconds", delay)
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._crawling():
                logger.info("not retrying %s: the crawl is stopping", request.url)
                self._release_slot(request)
                return False
            await sleep(min(remaining, _WAIT_STEP))
        return self._crawling()

    def _crawling(self) -> bool:
        crawler: Any = getattr(self, "crawler", None)
        return crawler is None or bool(getattr(crawler, "crawling", True))


REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class OffsiteRedirect(IgnoreRequest):
    """A redirect to a host outside the spider's allowed_domains: not followed."""


class _OffsiteRule:
    """Scrapy's offsite rule (an allowed domain or one of its subdomains; no allowed_domains
    allows everything), applied to where a response redirects."""

    crawler: Any
    _domains: list[str] | None = None
    _regex: re.Pattern[str] | None = None

    def refuse_offsite(self, target: str | None, how: str) -> None:
        """Raise OffsiteRedirect for a target on another site; anything else is left to Scrapy."""
        host = urlsplit(safe_url_string(target)).hostname if target else None  # IDNA, as Request
        if host is None or self.allowed(host):
            return
        stats = getattr(self.crawler, "stats", None)
        if stats is not None:
            stats.inc_value("offsite/redirects_refused")
        raise OffsiteRedirect(f"redirected off-site to {target} ({how})")

    def allowed(self, host: str) -> bool:
        spider = self.crawler.spider
        domains = [d for d in getattr(spider, "allowed_domains", None) or [] if d]
        if domains != self._domains:
            self._domains = domains
            pattern = "|".join(re.escape(d) for d in domains)
            self._regex = re.compile(rf"^(.*\.)?({pattern})$") if domains else None
        return self._regex is None or bool(self._regex.search(host))


def _redirects_allowed(request: Request) -> bool:
    meta = request.meta
    return not (meta.get("dont_redirect", False) or meta.get("allow_offsite", False))


# Scrapy looks for the tag in a page's first 4,096 characters, which take at most 4 bytes each.
_REFRESH_SCAN_BYTES = 4 * 4096
_REFRESH = re.compile(rb"refresh", re.IGNORECASE)


def may_refresh(response: Response) -> bool:
    """Whether a page could hold a `<meta http-equiv="refresh">`, judged from its bytes alone.

    Scrapy's check decodes the whole page and scans its head (for `<base>`, then the tag) on the
    crawl's thread, for every page. No tag is there without the ASCII letters "refresh", unless
    the page's encoding does not keep ASCII as is: UTF-16 and UTF-32, which put NUL bytes beside
    every ASCII letter, are always checked (no web encoding outside those recodes ASCII)."""
    head = response.body[:_REFRESH_SCAN_BYTES]
    return b"\x00" in head or _REFRESH.search(head) is not None


class OffsiteRedirectMiddleware(_OffsiteRule, RedirectMiddleware):
    """Scrapy's RedirectMiddleware (same settings, same place in the chain), except that a 3xx
    answer pointing off-site fails its request instead of being followed."""

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if (
            response.status in REDIRECT_CODES
            and b"Location" in response.headers
            and _redirects_allowed(request)
        ):
            # A non-http(s) target is Scrapy's to ignore, unless it names another host.
            self.refuse_offsite(redirect_target(request, response), f"HTTP {response.status}")
        return super().process_response(request, response)


class OffsiteMetaRefreshMiddleware(_OffsiteRule, MetaRefreshMiddleware):
    """Scrapy's MetaRefreshMiddleware (same settings, same place in the chain), except that a
    page refreshing off-site fails its request instead of being followed, and that a page which
    cannot hold a refresh (`may_refresh`) passes through unread."""

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if not isinstance(response, HtmlResponse) or not may_refresh(response):
            return response
        if (
            request.method != "HEAD"
            and _redirects_allowed(request)
            and urlparse_cached(request).scheme in ("http", "https")
        ):
            try:  # the parse Scrapy's own check makes next (cached per response)
                interval, url = get_meta_refresh(response, ignore_tags=self._ignore_tags)
                scheme = urlsplit(url).scheme if url else None
            except ValueError:  # an unparseable target: left to Scrapy's check
                url = scheme = None
            if url and float(interval) < self._maxdelay and scheme in ("http", "https"):
                self.refuse_offsite(url, "meta refresh")
        return super().process_response(request, response)


class RequestCountMiddleware:
    """Counts requests sent (`downloader/request_count`, the run report's figure), in place of
    Scrapy's DownloaderStats, which also sizes every request and response for byte counts that
    newsmon never shows. With DOWNLOADER_STATS on, DownloaderStats counts and this steps aside."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Any) -> RequestCountMiddleware:
        if crawler.settings.getbool("DOWNLOADER_STATS"):
            raise NotConfigured
        return cls(crawler.stats)

    def process_request(self, request: Request) -> None:
        self.stats.inc_value("downloader/request_count")


def redirect_target(request: Request, response: Response) -> str | None:
    """The absolute URL a 3xx answer points to, resolved as Scrapy's RedirectMiddleware does."""
    raw = response.headers.get("Location")
    if not raw:
        return None
    location = safe_url_string(raw)
    if raw.startswith(b"//"):
        location = urlparse_cached(request).scheme + "://" + location.lstrip("/")
    try:
        return urljoin(request.url, location)
    except ValueError:
        return None
