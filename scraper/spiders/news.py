"""NewsSpider: one config-driven spider for every news source.

It walks listing pages and follows entries to article pages; what it extracts comes from the
source's selectors, with fallbacks when a selector is absent or stops matching. One spider serves
all selected sources together, so Scrapy's per-domain slots keep each site polite while many
sections are checked at once.

    scrapy crawl news -a source=csto-en          # from the repository root, through scrapy.cfg
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.http import HtmlResponse, Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.reactor import is_asyncio_reactor_installed
from twisted.python.failure import Failure

from monitor.config import Config, ConfigError, load_config
from scraper import feeds
from scraper.article import read_article
from scraper.auto import is_non_article_url, url_shape
from scraper.extract import Entry, Listing, configured_next_page, extract_listing
from scraper.items import ArticleItem, RemovedItem
from scraper.session import CrawlSession, SourceRun
from scraper.switches import unlist_switched_off
from scraper.workers import PageWorker, WorkerUnavailable
from storage.archive import utc_now
from storage.normalize import canonical_url

MODES = ("crawl", "full", "check")


class NewsSpider(scrapy.Spider):
    name = "news"

    def __init__(
        self,
        source: str | None = None,
        config: Config | str | None = None,
        mode: str | None = None,
        max_pages: int | str | None = None,
        alert_on_first_run: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._alert_first_arg = alert_on_first_run
        self.source_names = tuple(n for n in (source or "").split(",") if n)
        self._config_arg = config
        self._mode_arg = mode
        self.max_pages = int(max_pages) if max_pages else None

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        """Under plain `scrapy crawl news`, the config's [settings] table applies too. Components
        switched off by their settings are left unimported (scraper/switches.py)."""
        super().update_settings(settings)
        if not settings.getbool("NEWSMON_SETTINGS_APPLIED"):  # else the newsmon CLI did it
            cls._apply_config_settings(settings)
        unlist_switched_off(settings)

    @staticmethod
    def _apply_config_settings(settings: Any) -> None:
        try:
            config = load_config(
                settings.get("NEWSMON_CONFIG"), database=settings.get("NEWSMON_DB")
            )
        except ConfigError:
            return  # reported, in one line, when the spider starts
        # "spider" priority: Scrapy merges its project settings over "project" ones later.
        settings.update(config.settings, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> NewsSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider._setup(crawler.settings)
        return spider

    def _setup(self, settings: Any) -> None:
        config = self._config_arg
        if not isinstance(config, Config):
            db = settings.get("NEWSMON_DB")
            config = load_config(config or settings.get("NEWSMON_CONFIG"), database=db)
        self.mode = self._mode_arg or settings.get("NEWSMON_MODE", "crawl")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        self.sources = config.select_sources(self.source_names)
        # A site moves between www.host and host (either way round) in links and redirects:
        # both are the site, and so are their subdomains (Scrapy's allowed_domains rule).
        hosts = {urlsplit(url).hostname or "" for s in self.sources for url in _listing_urls(s)}
        self.allowed_domains = sorted({*hosts, *(host.removeprefix("www.") for host in hosts)})
        self.discovered: set[str] = set()  # sources whose start page's feed was looked for
        alert_first = self._alert_first_arg
        if alert_first is None or isinstance(alert_first, str):
            alert_first = settings.getbool("NEWSMON_ALERT_ON_FIRST_RUN") or str(
                alert_first
            ).lower() in ("1", "true", "yes")
        self.session = CrawlSession(config, self.mode, alert_on_first_run=alert_first)
        # The page worker (scraper/workers.py) starts once the crawl has read this many article
        # pages itself (never, when disabled; 0: at the first page): a tick that reads a few
        # pages does not start a process for them. It reads listing pages too once it is ready.
        self.article_pages = 0
        self.page_worker: PageWorker | bool | None = None  # False: disabled or cannot start
        if not settings.getbool("NEWSMON_PAGE_WORKER", True):
            self.page_worker = False
        self._page_worker_starting: asyncio.Task[bool] | None = None
        self.page_worker_after = settings.getint("NEWSMON_PAGE_WORKER_AFTER", 20)
        self.page_worker_timeout = settings.getfloat("NEWSMON_PAGE_WORKER_TIMEOUT", 60.0)

    # -- requests ---------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.sources:
            run = self.session.begin(source)
            for url in source.start_urls:
                yield self._listing_request(run, url, page=1)
            if source.feed_url:
                yield self._listing_request(run, source.feed_url, 1, self.parse_feed)
            if source.sitemap_url:
                yield self._listing_request(run, source.sitemap_url, 1, self.parse_sitemap)
            for url in self.session.archive.failed_articles(source.name):
                yield self._retry_request(run, url)
            if self.mode == "check":
                for request in self._revisit_requests(run):
                    yield request

    def _retry_request(self, run: SourceRun, url: str) -> scrapy.Request:
        """A new article that failed in an earlier run, fetched directly: it may sit on a
        listing page that incremental walks no longer reach."""
        return scrapy.Request(
            url,
            callback=self.parse_article,
            errback=self.article_failed,
            meta={"source": run.name, "canonical": url},
        )

    def _listing_request(
        self,
        run: SourceRun,
        url: str,
        page: int,
        callback: Any = None,
        errback: Any = None,
        **meta: Any,
    ) -> scrapy.Request:
        """A listing page, feed or sitemap (`callback`), conditional unless in full mode."""
        headers = {}
        if self.mode != "full" and not run.backfill:  # a backfill needs every page's body
            etag, modified = self.session.archive.validators(url)
            headers = _conditional_headers(etag, modified)
        return scrapy.Request(
            url,
            callback=callback or self.parse_listing,
            errback=errback or self.listing_failed,
            headers=headers,
            meta={"source": run.name, "page": page, **meta},
            priority=10,
            dont_filter=page == 1,
        )

    def _revisit_requests(self, run: SourceRun) -> Iterable[scrapy.Request]:
        due = self.session.archive.due_for_revisit(
            run.name,
            revisit_days=run.config.revisit_days,
            revisit_every=run.config.revisit_every,
        )
        for row in due:
            yield scrapy.Request(
                row["url"],
                callback=self.parse_article,
                errback=self.article_failed,
                headers=_conditional_headers(row["etag"], row["last_modified"]),
                meta={"source": run.name, "article_id": row["id"], "revisit": True},
                dont_filter=True,
            )

    # -- listing pages ----------------------------------------------------------------------

    def parse_listing(self, response: Response) -> Iterable[Any] | AsyncIterator[Any]:
        """Requests for the page's new entries and its next page. Once the page worker is ready,
        it reads the page (an async generator awaits it); never for an automatic source's first
        page, whose feed is looked for in the response."""
        run = self._listing_run(response, html=True)
        if run is None:
            return []
        self._start_page_worker_when_due()
        first_automatic = run.config.automatic and response.meta["page"] == 1
        worker = self.page_worker
        if isinstance(worker, PageWorker) and worker.ready and not first_automatic:
            return self._listing_in_worker(run, response)
        listing = extract_listing(response, response.url, run.config.selectors)
        return self._follow_listing(run, response, listing)

    async def _listing_in_worker(
        self, run: SourceRun, response: HtmlResponse
    ) -> AsyncIterator[Any]:
        """An async generator, unlike parse_article's coroutine: the next page's request, when it
        is known here, goes out before the worker's answer, while the worker reads the page."""
        next_request = self._next_listing_now(run, response)
        if next_request is not None:
            yield next_request
        run.listings_in_worker += 1
        try:
            listing = await self._in_worker(
                lambda: _page(run, response, kind="listing"),
                lambda: extract_listing(response, response.url, run.config.selectors),
                urgent=True,  # its answer is the crawl's next requests: ahead of article pages
            )
        finally:
            run.listings_in_worker -= 1
        for output in self._follow_listing(run, response, listing, next_request is not None):
            yield output

    def _next_listing_now(self, run: SourceRun, response: HtmlResponse) -> scrapy.Request | None:
        """The next listing page's request, read here from the configured selector, when the walk
        goes on whatever this page holds (a full crawl, a backfill), and the worker has answered
        for the page before it.

        Waiting for the worker's reading of the page, a backfill's crawl had nothing left to
        download for about 1 ms a listing page (measured at each idle wait: half of it for the
        worker's answer, half for the next page's download). A page that repeats an earlier one
        (Bitrix, past the end) is found out only by the worker: waiting for the answer for the
        page before keeps a walk from running more than one page past it.
        """
        if run.walk_done or run.listings_in_worker or not self._walks_every_page(run):
            return None
        page = response.meta["page"]
        if self._at_page_limit(run, page):
            return None  # the worker's answer ends the walk, as without a worker
        url = configured_next_page(response, response.url, run.config.selectors)
        return self._listing_request(run, url, page + 1) if url else None

    async def _in_worker(
        self, page: Callable[[], Any], read_here: Callable[[], Any], urgent: bool = False
    ) -> Any:
        """The page worker's answer for `page()`, or `read_here()` when it cannot give one (not
        ready yet, or gone: then for the rest of the crawl)."""
        worker = self.page_worker
        if isinstance(worker, PageWorker):
            if worker.ready:
                try:
                    return await worker.run(page(), urgent)
                except WorkerUnavailable:
                    pass
            if worker.stopped:
                self.page_worker = False
        return read_here()

    def _follow_listing(
        self, run: SourceRun, response: Response, listing: Listing, next_requested: bool = False
    ) -> Iterable[Any]:
        self._note_fallbacks(run, listing.origin, response.url)
        fresh = self._fresh_entries(run, response, listing.entries)
        if fresh is None:  # Bitrix repeats its last page past the end
            run.walk_done = True
            return
        yield from self._article_requests(run, fresh)
        if run.config.automatic and response.meta["page"] == 1:
            yield from self._discovered_feed(run, response, listing.entries)
        if not listing.next_page:
            run.walk_done = True
        elif not next_requested and self._should_continue(run, response.meta["page"], fresh):
            yield self._listing_request(run, listing.next_page, response.meta["page"] + 1)

    def parse_feed(self, response: Response) -> Iterable[Any]:
        """An RSS/Atom listing: its new items are fetched like a listing page's new entries."""
        shapes = response.meta.get("entry_shapes")
        if shapes is not None and response.status >= 400:  # a discovered feed is optional
            self.discovered_failed(response.url, _describe(response))
            return
        run = self._listing_run(response, text=False)
        if run is None:
            return
        entries = feeds.parse_feed(response.body, response.url)
        if shapes:  # a feed found on a listing page: keep the items shaped like its entries
            entries = [e for e in entries if url_shape(e.url) in shapes]
        entries = [e for e in entries if self._allowed(e.url)]
        if not entries and shapes is None:
            run.note(f"feed {response.url} holds no items")
        fresh = self._fresh_entries(run, response, entries)
        if not run.config.start_urls:  # the feed is the whole listing: one page, read to its end
            run.walk_done = True
        yield from self._article_requests(run, fresh or [])

    def parse_sitemap(self, response: Response) -> Iterable[Any]:
        """A sitemap listing; an index is walked newest child first, like pagination."""
        run = self._listing_run(response, text=False)
        if run is None:
            return
        body = feeds.sitemap_body(response)
        entries, children = feeds.parse_sitemap(body, response.url) if body else ([], [])
        children = [child for child in children if self._allowed(child)]  # off-site: not fetched
        queue = children or response.meta.get("sitemaps", [])
        entries = [e for e in entries if self._allowed(e.url) and not is_non_article_url(e.url)]
        if not body or (not entries and not children):
            run.note(f"sitemap {response.url} lists no articles")
        fresh = self._fresh_entries(run, response, entries) if not children else []
        yield from self._article_requests(run, fresh or [])
        page = response.meta["page"]
        if not queue and not run.config.start_urls:
            run.walk_done = True
        if queue and (children or self._should_continue(run, page, fresh or [])):
            next_url, *rest = queue
            yield self._listing_request(
                run, next_url, page + (0 if children else 1), self.parse_sitemap, sitemaps=rest
            )

    def _listing_run(
        self, response: Response, text: bool = True, html: bool = False
    ) -> SourceRun | None:
        """Count a listing response; None when it has nothing to read (304, error, not text)."""
        run = self.session.runs[response.meta["source"]]
        run.counts["requests"] += 1
        run.counts["pages"] += 1
        if response.status == 304:
            run.not_modified += 1
            run.walk_done = True  # unchanged since the last finished walk
            return None
        wanted = HtmlResponse if html else TextResponse if text else Response
        if response.status >= 400 or not isinstance(response, wanted):
            run.listing_failed += 1
            run.counts["errors"] += 1
            run.note(f"listing page {response.url} answered {_describe(response)}")
            return None
        run.listing_ok += 1
        return run

    def _fresh_entries(
        self, run: SourceRun, response: Response, entries: list[Entry]
    ) -> list[tuple[str, Entry]] | None:
        """The entries not stored yet (all in full mode); None for a page seen in this run."""
        urls = [canonical_url(entry.url) for entry in entries]
        fingerprint = tuple(urls)
        if fingerprint in run.seen_pages:
            return None
        run.seen_pages.add(fingerprint)
        run.entries += len(urls)
        run.validators[response.url] = (
            _header(response, "ETag"),
            _header(response, "Last-Modified"),
        )
        fresh = [(url, entry) for url, entry in zip(urls, entries, strict=True)]
        if self.mode != "full":  # a full crawl fetches every entry, stored or not
            known = self.session.archive.known_urls(urls)
            fresh = [(url, entry) for url, entry in fresh if url not in known]
        return fresh

    def _article_requests(
        self, run: SourceRun, fresh: list[tuple[str, Entry]]
    ) -> Iterable[scrapy.Request]:
        # Entries are absolute already (scraper/extract.py, feeds.py): no response.follow, whose
        # join against the page's <base> cost a backfill 1% of its time for nothing.
        for url, entry in fresh:
            yield scrapy.Request(
                entry.url,
                callback=self.parse_article,
                errback=self.article_failed,
                meta={"source": run.name, "entry": entry, "canonical": url},
            )

    def _discovered_feed(
        self, run: SourceRun, response: Response, entries: list[Entry]
    ) -> Iterable[scrapy.Request]:
        """Automatic mode: the start page's RSS/Atom feed becomes an additional listing."""
        if run.config.feed_url or run.name in self.discovered:
            return
        self.discovered.add(run.name)
        for url in feeds.discover_feeds(response, response.url)[:1]:
            if self._allowed(url):
                shapes = sorted({url_shape(entry.url) for entry in entries})
                yield self._listing_request(
                    run,
                    url,
                    1,
                    self.parse_feed,
                    errback=lambda failure: self.discovered_failed(
                        failure.request.url, failure.getErrorMessage()
                    ),
                    entry_shapes=shapes,
                )

    def discovered_failed(self, url: str, reason: str) -> None:
        self.logger.info("feed %s found on a listing page is not usable: %s", url, reason)

    def _allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").removeprefix("www.")
        return any(
            host == domain.removeprefix("www.") or host.endswith("." + domain)
            for domain in self.allowed_domains
        )

    def _at_page_limit(self, run: SourceRun, page: int) -> bool:
        limit = self.max_pages or run.config.max_pages
        return limit is not None and page >= limit

    def _walks_every_page(self, run: SourceRun) -> bool:
        """A full crawl or a backfill goes on whatever a listing page holds, to a page limit."""
        return self.mode == "full" or run.backfill

    def _should_continue(self, run: SourceRun, page: int, fresh: list[Any]) -> bool:
        if self._at_page_limit(run, page):
            run.cut_short = True  # older pages stay to be walked by a later run
            return False
        # After an interrupted or limited walk, older pages may hold unstored entries behind
        # pages whose entries are all stored: keep walking until one walk finishes.
        if self._walks_every_page(run) or fresh:
            return True
        run.walk_done = True  # caught up: this page holds nothing new
        return False

    def _note_fallbacks(self, run: SourceRun, origin: dict[str, str], url: str) -> None:
        for key, where in origin.items():
            if where == "fallback" and key != "next_page":  # the last page has no next link
                run.problem(f"selector:{key}", f"selector `{key}` matched nothing on {url}")

    def listing_failed(self, failure: Failure) -> None:
        request = failure.request
        run = self.session.runs[request.meta["source"]]
        run.counts["requests"] += 1
        run.counts["errors"] += 1
        run.listing_failed += 1
        reason = _failure_reason(failure)
        run.note(f"listing page {request.url} failed: {reason}")

    # -- article pages ----------------------------------------------------------------------

    def parse_article(self, response: Response) -> list[Any] | Coroutine[Any, Any, list[Any]]:
        """The page's item; once the page worker is in use, a coroutine that awaits it (Scrapy
        awaits either). Not an async generator: Scrapy passes those through every spider
        middleware's async path, which costs more than the page's whole trip to the worker."""
        meta = response.meta
        run = self.session.runs[meta["source"]]
        run.counts["requests"] += 1
        if meta.get("revisit") and response.status in (404, 410):
            return [RemovedItem(run.name, meta["article_id"], response.url, response.status)]
        if meta.get("revisit") and response.status == 304:
            run.counts["unchanged"] += 1
            self.session.archive.mark_checked(meta["article_id"], **_validators(response))
            return []
        if response.status >= 400 or not isinstance(response, HtmlResponse):
            run.counts["errors"] += 1
            self.logger.warning("%s: article %s: %s", run.name, response.url, _describe(response))
            if not meta.get("revisit"):
                run.article_failed(response.request.url, _describe(response))
            return []
        self._start_page_worker_when_due()
        self.article_pages += 1
        worker = self.page_worker
        if isinstance(worker, PageWorker) and worker.ready:
            return self._read_in_worker(run, response)
        item, origin = self._read_here(run, response)
        self._note_fallbacks(run, origin, response.url)
        return [item]

    def _read_here(self, run: SourceRun, response: HtmlResponse) -> tuple[ArticleItem, Any]:
        validators = _validators(response)
        url, meta = response.url, response.meta
        return read_article(response, url, run.name, run.config, meta, validators, utc_now())

    async def _read_in_worker(self, run: SourceRun, response: HtmlResponse) -> list[Any]:
        item, origin = await self._in_worker(
            lambda: _page(run, response), lambda: self._read_here(run, response)
        )
        self._note_fallbacks(run, origin, response.url)
        return [item]

    def _start_page_worker_when_due(self) -> None:
        """Start the one page worker once the crawl has read `page_worker_after` article pages.
        It starts in the background: pages are read here until it is ready."""
        if self.page_worker is not None or self.article_pages < self.page_worker_after:
            return
        if not is_asyncio_reactor_installed():  # it talks to the worker through asyncio
            self.page_worker = False
            return
        sources = {source.name: source for source in self.sources}
        worker = PageWorker("scraper.article:page_reader", sources, self.page_worker_timeout)
        self.page_worker = worker
        # Kept: the event loop holds a task only weakly.
        self._page_worker_starting = asyncio.ensure_future(worker.start())

    def article_failed(self, failure: Failure) -> None:
        request = failure.request
        run = self.session.runs[request.meta["source"]]
        run.counts["requests"] += 1
        run.counts["errors"] += 1
        reason = _failure_reason(failure)
        self.logger.warning("%s: article %s failed: %s", run.name, request.url, reason)
        if not request.meta.get("revisit"):
            run.article_failed(request.url, reason)

    # -- end --------------------------------------------------------------------------------

    def closed(self, reason: str) -> None:
        if isinstance(self.page_worker, PageWorker):
            self.page_worker.close()
        try:
            self.summaries = self.session.finish()
            self.crawler.stats.set_value("newsmon/summaries", self.summaries)
        finally:
            self.session.close()


def _page(run: SourceRun, response: HtmlResponse, kind: str = "article") -> dict[str, Any]:
    """What the page worker reads a response from: the request's meta and the headers that an
    article's item takes, and the page as bytes with the encoding Scrapy chose; the worker
    decodes them with the call Scrapy's `response.text` makes. Where no encoding was declared or
    detected, Scrapy decodes as ASCII with replacements, which that call would not repeat: such
    a page goes as its text. (The text itself would cost more to send: pickle transcodes any
    non-ASCII text to UTF-8 on the way and back.)"""
    meta = response.meta
    page = {
        "kind": kind,
        "source": run.name,
        "url": response.url,
        "meta": {key: meta[key] for key in ("entry", "canonical", "article_id") if key in meta},
        "validators": _validators(response),
        "fetched_at": utc_now(),
    }
    encoding = response.encoding
    if encoding == "ascii":
        page["text"] = response.text
    else:
        page["body"], page["encoding"] = response.body, encoding
    return page


def _listing_urls(source: Any) -> list[str]:
    return [*source.start_urls, *filter(None, (source.feed_url, source.sitemap_url))]


def _header(response: Response, name: str) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def _validators(response: Response) -> dict[str, str | None]:
    return {"etag": _header(response, "ETag"), "last_modified": _header(response, "Last-Modified")}


def _conditional_headers(etag: str | None, modified: str | None) -> dict[str, str]:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    return headers


def _failure_reason(failure: Failure) -> str:
    """One line for a failed request: the HTTP status, else the error's message or its type."""
    if failure.check(HttpError):
        return f"HTTP {failure.value.response.status}"
    return failure.getErrorMessage() or failure.type.__name__


def _describe(response: Response) -> str:
    if response.status >= 400:
        return f"HTTP {response.status}"
    content_type = _header(response, "Content-Type") or "no content type"
    return f"a non-HTML response ({content_type})"
