"""`newsmon doctor`: what newsmon extracts from a source, field by field, and where it came from.

`fetch_pages` fetches a source's listing page (or feed, or sitemap) and one article page through
Scrapy, with the project's settings (robots.txt, user agent, timeouts) and a tiny spider that
keeps the responses; it stores nothing. `diagnose` turns the pages into a `Diagnosis`: for each
field its value, its origin (configured selector, fallback, automatic, feed, sitemap), warnings
for values a broken selector left to the fallback, and selectors suggested for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import scrapy
from scrapy.http import Response, TextResponse

from monitor.config import Config, SourceConfig
from monitor.terminal import safe_text
from scraper import feeds
from scraper.extract import Entry, extract_article, extract_listing
from storage.normalize import clean_text, find_date, parse_date

ORIGINS = {
    "selector": "configured selector",
    "fallback": "fallback",
    "automatic": "automatic",
    "feed": "feed",
    "sitemap": "sitemap",
    "none": "not configured",
}
DOCTOR_SETTINGS = {
    "NEWSMON_PROGRESS_INTERVAL": 0,
    "HTTPERROR_ALLOW_ALL": True,  # a 404 or 500 is reported, not dropped
    "RETRY_TIMES": 1,
}


# -- fetching --------------------------------------------------------------------------------------


@dataclass
class Pages:
    """The responses doctor looks at; `listing_kind` says what the listing is."""

    source: SourceConfig
    listing: Response | None = None
    listing_kind: str = "html"  # "html", "feed" or "sitemap"
    feed: Response | None = None  # a configured or discovered feed next to an HTML listing
    feed_url: str | None = None
    article: Response | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None


class PageSpider(scrapy.Spider):
    """Fetches one listing (following a sitemap index once) and its first article."""

    name = "newsmon-doctor"

    def __init__(
        self,
        pages: Pages,
        listing_url: str | None = None,
        article_url: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.pages, self.listing_url, self.article_url = pages, listing_url, article_url

    async def start(self) -> Any:
        source = self.pages.source
        url = self.listing_url or (source.start_urls[0] if source.start_urls else None)
        if url:
            yield self._get(url, self.got_listing)
            if source.feed_url:
                self.pages.feed_url = source.feed_url
                yield self._get(source.feed_url, self.got_feed)
        elif source.feed_url:
            self.pages.listing_kind = "feed"
            yield self._get(source.feed_url, self.got_listing)
        elif source.sitemap_url:
            self.pages.listing_kind = "sitemap"
            yield self._get(source.sitemap_url, self.got_listing)
        if self.article_url:
            yield self._get(self.article_url, self.got_article)

    def _get(self, url: str, callback: Any) -> scrapy.Request:
        return scrapy.Request(url, callback=callback, errback=self.failed, dont_filter=True)

    def got_listing(self, response: Response) -> Any:
        self.pages.listing = response
        if response.status >= 400:
            return
        entries, children = listing_entries(self.pages, response)
        if children:  # a sitemap index: its newest child sitemap is the listing
            yield self._get(children[0], self.got_listing)
            return
        source = self.pages.source
        if self.pages.listing_kind == "html" and source.automatic and not source.feed_url:
            found = feeds.discover_feeds(response, response.url)
            if found:
                self.pages.feed_url = found[0]
                yield self._get(found[0], self.got_feed)
        if not self.article_url and entries:
            self.article_url = entries[0].url
            yield self._get(entries[0].url, self.got_article)

    def got_feed(self, response: Response) -> Any:
        """A feed next to the HTML listing; its first item is the article if the page had none."""
        self.pages.feed = response
        if self.article_url or response.status >= 400:
            return
        items = feeds.parse_feed(response.body, response.url)
        if items:
            self.article_url = items[0].url
            yield self._get(items[0].url, self.got_article)

    def got_article(self, response: Response) -> None:
        self.pages.article = response

    def failed(self, failure: Any) -> None:
        reason = failure.getErrorMessage() or failure.type.__name__
        self.pages.errors.append(f"{failure.request.url}: {reason}")


def listing_entries(pages: Pages, response: Response) -> tuple[list[Entry], list[str]]:
    """(entries, child sitemaps) of the listing response, as the spider would read them."""
    if pages.listing_kind == "feed":
        return feeds.parse_feed(response.body, response.url), []
    if pages.listing_kind == "sitemap":
        body = feeds.sitemap_body(response)
        return feeds.parse_sitemap(body, response.url) if body else ([], [])
    if not isinstance(response, TextResponse):
        return [], []
    return extract_listing(response, response.url, pages.source.selectors).entries, []


def fetch_pages(
    config: Config,
    sources: list[SourceConfig] | tuple[SourceConfig, ...],
    overrides: dict[str, Any] | None = None,
    *,
    listing_url: str | None = None,
    article_url: str | None = None,
) -> dict[str, Pages]:
    """Blocking, once per process (Scrapy's reactor): the pages of each source, by name."""
    from monitor.runner import run_in_reactor

    async def main(process: Any) -> dict[str, Pages]:
        found = {}
        for source in sources:
            pages = Pages(source)
            crawler = process.create_crawler(PageSpider)
            await process.crawl(
                crawler, pages=pages, listing_url=listing_url, article_url=article_url
            )
            found[source.name] = pages
        return found

    return run_in_reactor(config, main, {**DOCTOR_SETTINGS, **(overrides or {})})


# -- the diagnosis ---------------------------------------------------------------------------------


@dataclass
class FieldReport:
    page: str  # "listing", "feed" or "article"
    name: str
    value: str | None
    origin: str  # a key of ORIGINS
    expression: str | None = None  # the configured selector, if any
    required: bool = False
    warning: str | None = None


@dataclass
class Diagnosis:
    source: str
    listing_url: str | None = None
    article_url: str | None = None
    fields: list[FieldReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # pages that could not be read
    suggestions: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [f"{f.page} {f.name}" for f in self.fields if f.required and not f.value]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    @property
    def warnings(self) -> list[str]:
        return [f.warning for f in self.fields if f.warning]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "listing_url": self.listing_url,
            "article_url": self.article_url,
            "fields": [vars(f) | {"origin_label": ORIGINS[f.origin]} for f in self.fields],
            "problems": self.problems,
            "missing": self.missing,
            "warnings": self.warnings,
            "suggested_selectors": self.suggestions,
        }

    def lines(self) -> list[str]:
        """The report as a person reads it; site text is made safe for the terminal."""
        out = [f"source {self.source}"]
        for page, url in (("listing", self.listing_url), ("article", self.article_url)):
            out.append(f"  {page}: {safe_text(url) if url else '(not fetched)'}")
            for report in self.fields:
                if report.page == page or (page == "listing" and report.page == "feed"):
                    out.append("    " + _field_line(report))
        out += [f"  ! {safe_text(w)}" for w in self.warnings]
        out += [f"  ! {safe_text(p)}" for p in self.problems]
        if self.suggestions:
            out.append("  suggested selectors (add under [sources.selectors] to pin them):")
            out += [f"    {key} = {_quote(value)}" for key, value in self.suggestions.items()]
        if self.ok:
            out.append("  result: ok")
        else:
            out.append(f"  result: FAILED - {'; '.join(self.problems + _missing(self.missing))}")
        return out


def _missing(names: list[str]) -> list[str]:
    return [f"no {name} found" for name in names]


def _quote(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _field_line(report: FieldReport) -> str:
    value = safe_text(report.value) if report.value else "-- not found --"
    if len(value) > 70:
        value = value[:67] + "..."
    label = f"{report.page} {report.name}" if report.page == "feed" else report.name
    where = ORIGINS[report.origin] + (f"  {report.expression}" if report.expression else "")
    return f"{label:<13} {value:<72} {where}"


def diagnose(pages: Pages) -> Diagnosis:
    """The field-by-field report for fetched pages (pure: no network)."""
    source = pages.source
    diagnosis = Diagnosis(source.name)
    listing = pages.listing
    if listing is None:
        diagnosis.problems.append(f"listing not fetched: {pages.error or 'no answer'}")
    elif listing.status >= 400:
        diagnosis.problems.append(f"listing {listing.url} answered HTTP {listing.status}")
        diagnosis.listing_url = listing.url
    else:
        diagnosis.listing_url = listing.url
        diagnosis.fields += _listing_fields(pages, listing)
    if pages.feed_url and pages.listing_kind == "html":
        feed = _feed_field(pages)
        diagnosis.fields.append(feed)
        if feed.required:  # the feed lists the articles the page does not show
            for report in diagnosis.fields:
                report.required = report.required and report.name != "entries"
    article = pages.article
    if article is not None:
        diagnosis.article_url = article.url
        if article.status >= 400 or not isinstance(article, TextResponse):
            diagnosis.problems.append(f"article {article.url} answered HTTP {article.status}")
        else:
            diagnosis.fields += _article_fields(source, article)
    elif listing is not None and listing.status < 400:
        diagnosis.problems.append("no article page fetched (the listing has no entries)")
    diagnosis.suggestions = _suggestions(pages, diagnosis)
    return diagnosis


def _listing_fields(pages: Pages, listing: Response) -> list[FieldReport]:
    source, kind = pages.source, pages.listing_kind
    if kind != "html":
        entries, _ = listing_entries(pages, listing)
        first = entries[0] if entries else Entry(url="")
        return [
            FieldReport("listing", "entries", _count(entries), kind, required=True),
            FieldReport("listing", "link", first.url or None, kind),
            FieldReport("listing", "title", first.title, kind),
            FieldReport("listing", "date", _date_value(first.date), kind),
        ]
    if not isinstance(listing, TextResponse):
        return [FieldReport("listing", "entries", None, "automatic", required=True)]
    selectors = source.selectors
    result = extract_listing(listing, listing.url, selectors)
    item_origin = result.origin.get("item", "automatic")
    first = result.entries[0] if result.entries else Entry(url="")
    reports = [
        FieldReport(
            "listing",
            "entries",
            _count(result.entries),
            item_origin,
            selectors.item,
            required=True,
            warning=_fallback_warning("item", selectors.item, item_origin, listing.url),
        ),
    ]
    for key, value in (
        ("link", first.url or None),
        ("title", first.title),
        ("date", _date_value(first.date)),
        ("summary", first.summary),
    ):
        expression = getattr(selectors, key) if item_origin == "selector" else None
        if item_origin != "selector":
            origin = item_origin
        elif expression or key == "link":
            origin = "selector"
            expression = expression or "a::attr(href)"
        else:
            origin = "none"
        reports.append(FieldReport("listing", key, value, origin, expression))
    next_origin = result.origin.get("next_page", "automatic")
    next_expression = selectors.next_page if next_origin != "automatic" else None
    reports.append(
        FieldReport("listing", "next_page", result.next_page, next_origin, next_expression)
    )
    return reports


def _feed_field(pages: Pages) -> FieldReport:
    feed, origin = pages.feed, "feed" if pages.source.feed_url else "automatic"
    if feed is None or feed.status >= 400:
        status = f"HTTP {feed.status}" if feed is not None else "not fetched"
        return FieldReport("feed", "items", f"{pages.feed_url} ({status})", origin)
    items = feeds.parse_feed(feed.body, feed.url)
    value = f"{len(items)} items in {feed.url}" if items else None
    return FieldReport("feed", "items", value, origin, required=bool(items))


def _article_fields(source: SourceConfig, article: TextResponse) -> list[FieldReport]:
    selectors = source.selectors
    fields = extract_article(article, article.url, selectors)
    origin = fields.origin
    body = clean_text(fields.body_html) if fields.body_html else ""
    words = len(body.split())
    body_value = f"{words} words: {body[:60]}" if body else None
    reports = []
    for key, name, value, required in (
        ("article_title", "title", fields.title, True),
        ("article_date", "date", _date_value(fields.date), False),
        ("article_body", "body", body_value, True),
    ):
        where = origin.get(key, "automatic")
        expression = getattr(selectors, key)
        warning = _fallback_warning(key, expression, where, article.url)
        if name == "date" and not value:
            warning = f"no date found on {article.url}: articles are stored without one"
        reports.append(FieldReport("article", name, value, where, expression, required, warning))
    attachments = ", ".join(fields.attachments) or None
    reports.append(FieldReport("article", "attachments", attachments, "automatic"))
    return reports


def _fallback_warning(key: str, expression: str | None, origin: str, url: str) -> str | None:
    if origin != "fallback":
        return None
    return f"selector `{key}` ({expression}) matched nothing on {url}; the fallback was used"


def _count(entries: list[Entry]) -> str | None:
    if not entries:
        return None
    first = entries[0].title or entries[0].url
    return f"{len(entries)} found, first: {first}"


def _date_value(raw: str | None) -> str | None:
    if not raw:
        return None
    parsed = parse_date(raw) or find_date(raw)
    return f"{raw} -> {parsed}" if parsed and parsed != raw else raw if parsed else f"{raw} (?)"


def _suggestions(pages: Pages, diagnosis: Diagnosis) -> dict[str, str]:
    """Selectors for the fields that are not read by a working configured selector."""
    from monitor.probe import suggest_article, suggest_listing

    pinned = {
        ("article_" + f.name if f.page == "article" else f.name)
        for f in diagnosis.fields
        if f.origin == "selector"
    }
    if "entries" in pinned:
        pinned.add("item")
    suggested: dict[str, str] = {}
    listing, article = pages.listing, pages.article
    readable = isinstance(listing, TextResponse) and listing.status < 400
    if pages.listing_kind == "html" and readable and "item" not in pinned:
        suggested.update(suggest_listing(listing, listing.url))
    if isinstance(article, TextResponse) and article.status < 400:
        suggested.update(suggest_article(article, article.url))
    return {key: value for key, value in suggested.items() if key not in pinned}
