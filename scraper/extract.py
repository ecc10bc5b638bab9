"""Pull entries and article fields out of pages: configured selectors first, then fallbacks.

Every value records where it came from ("selector" or "fallback"), so a crawl can warn that a
configured selector stopped matching even while the fallback still finds the content.
"""

from __future__ import annotations

import re
import sys
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

from lxml import etree
from lxml import html as lxml_html
from parsel import Selector, SelectorList
from parsel.csstranslator import HTMLTranslator

from monitor.config import Selectors
from storage.normalize import (
    ATTACHMENT_EXTENSIONS,
    find_date,
    is_attachment,
    is_http_url,
    normalize_whitespace,
)

if TYPE_CHECKING:
    from scrapy.http import HtmlResponse, TextResponse

NEXT_LINK_TEXTS = {
    "next", "next page", "older", "older posts", "older entries", "»", "›", ">", ">>",
    "след.", "следующая", "далее", "вперед", "вперёд", "ещё", "еще",
}  # fmt: skip
DATE_META = (
    "meta[property='article:published_time']::attr(content)",
    "meta[name='pubdate']::attr(content)",
    "meta[name='publishdate']::attr(content)",
    "meta[name='date']::attr(content)",
    "meta[name='DC.date']::attr(content)",
    "meta[itemprop='datePublished']::attr(content)",
    "[itemprop='datePublished']::attr(datetime)",
    "time[datetime]::attr(datetime)",
)
BODY_CANDIDATES = (
    "[itemprop='articleBody']",
    ".news-detail-text",
    ".entry-content",
    ".post-content",
    ".article-body",
    "article",
)
PAGINATION_PARAMS = re.compile(r"^(PAGEN_\d+|page|paged|p|start|offset)$", re.IGNORECASE)


def select(node: Selector | SelectorList, expression: str) -> SelectorList:
    """Run a configured expression: CSS by default, XPath with an "xpath:" prefix."""
    if expression.startswith("xpath:"):
        return node.xpath(expression[len("xpath:") :])
    return node.css(expression)


# The crawl's hot path (every listing entry, every article page) evaluates configured expressions
# with `matches`, not `select`: parsel wraps every match in a Selector and every result in a
# SelectorList, which cost more than the XPath itself on a small page. `matches` compiles each
# expression once, the way parsel translates it (HTMLTranslator, parsel's XPath namespaces), and
# returns what lxml matched; tests/test_extract.py checks both give the same values.
_CSS_TRANSLATOR = HTMLTranslator()
_XPATH_NAMESPACES = {"re": "http://exslt.org/regular-expressions", "set": "http://exslt.org/sets"}
_TEXT_NODES = etree.XPath(".//text()", smart_strings=False)

Match = Any  # an lxml element, a string (::text, ::attr(), text()), or an XPath number/boolean


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> etree.XPath:
    if expression.startswith("xpath:"):
        query = expression[len("xpath:") :]
    else:
        query = _CSS_TRANSLATOR.css_to_xpath(expression)
    try:
        return etree.XPath(query, namespaces=_XPATH_NAMESPACES, smart_strings=False)
    except etree.XPathError as exc:
        raise ValueError(f"XPath error: {exc} in {query}") from None


# A page's tree. Scrapy's `response.selector` costs three times the parse itself: parsel sniffs
# for JSON, w3lib looks for <base href> and resolves it, and a new parser is built per page. The
# hot path parses an HTML response's text the way parsel does (the decoded text, stripped, without
# NUL, as UTF-8, libxml2's HTML parser with recover and huge_tree, lxml.html elements) with one
# parser, once per response; tests/test_extract.py checks the trees are equal. The fallbacks
# still read pages through `response.selector`: a page whose configured selector misses is parsed
# twice, and one that a fallback read first is not parsed again.
_PAGE_PARSER = lxml_html.HTMLParser(recover=True, encoding="utf-8", huge_tree=True)
_PAGE_TREES: weakref.WeakKeyDictionary[TextResponse, etree._Element] = weakref.WeakKeyDictionary()


class HtmlPage:
    """An HTML page outside Scrapy (the page worker reads pages without importing it): what
    extraction reads of a response, its URL and text, its tree parsed once as a response's is,
    and a parsel Selector over that tree for the fallbacks."""

    def __init__(self, url: str, text: str) -> None:
        self.url, self.text = url, text

    @cached_property
    def root(self) -> etree._Element:
        return _parse_text(self.text, self.url)

    @cached_property
    def selector(self) -> Selector:
        return Selector(root=self.root, type="html")

    def css(self, query: str) -> SelectorList:
        return self.selector.css(query)

    def xpath(self, query: str, **kwargs: Any) -> SelectorList:
        return self.selector.xpath(query, **kwargs)


def page_root(node: Any) -> Any:
    """The lxml root of a response (an HTML one parsed once) or of a parsel Selector; an element,
    and any other match (a string, a number), as it is."""
    if isinstance(node, etree._Element):
        return node
    if isinstance(node, HtmlPage):
        return node.root
    if _is_html_response(node):
        root = _PAGE_TREES.get(node)
        if root is None:
            root = _PAGE_TREES[node] = _parse_page(node)
        return root
    selector = getattr(node, "selector", node)  # any other response: parsel's parse (XML, text)
    return getattr(selector, "root", selector)


def _is_html_response(node: Any) -> bool:
    """A Scrapy HtmlResponse, asked without importing Scrapy: none exists before it is imported."""
    http = sys.modules.get("scrapy.http")
    return http is not None and isinstance(node, http.HtmlResponse)


def _parse_page(response: HtmlResponse) -> etree._Element:
    built = getattr(response, "_cached_selector", None)  # Scrapy's, if a fallback made it first
    if built is not None:
        return built.root
    return _parse_text(response.text, response.url)


def _parse_text(text: str, url: str) -> etree._Element:
    body = text.strip().replace("\x00", "").encode("utf-8") or b"<html/>"
    root = etree.fromstring(body, parser=_PAGE_PARSER, base_url=url)
    if root is None:
        root = etree.fromstring(b"<html/>", parser=_PAGE_PARSER, base_url=url)
    return root


def matches(node: Any, expression: str) -> list[Match]:
    """What `select(node, expression)` matches, unwrapped; `node` is a response, a parsel
    Selector or an lxml element."""
    node = page_root(node)
    if not isinstance(node, etree._Element):  # a string or a number has nothing to select in
        return []
    try:
        result = _compiled(expression)(node)
    except etree.XPathError as exc:
        raise ValueError(f"XPath error: {exc} in {expression}") from None
    return result if isinstance(result, list) else [result]


def serialized(match: Match) -> str:
    """A match as text, as parsel's Selector.get() gives it: an element as its HTML."""
    if isinstance(match, str):
        return match
    if isinstance(match, etree._Element):
        return etree.tostring(match, method="html", encoding="unicode", with_tail=False)
    if isinstance(match, bool):
        return "1" if match else "0"
    return str(match)


def text_of(nodes: SelectorList) -> str | None:
    """Joined, whitespace-normalized text of matched nodes (elements or ::text results)."""
    return joined_text(node.root for node in nodes)


def joined_text(found: Iterable[Match]) -> str | None:
    """Joined, whitespace-normalized text of matches: an element's text nodes, a string as is."""
    parts = [
        (" ".join(_TEXT_NODES(match)) if isinstance(match.tag, str) else "")  # a comment: none
        if isinstance(match, etree._Element)
        else serialized(match)
        for match in found
    ]
    text = normalize_whitespace(" ".join(parts))
    return text or None


@dataclass
class Entry:
    url: str
    title: str | None = None
    date: str | None = None
    summary: str | None = None


@dataclass
class Listing:
    entries: list[Entry]
    next_page: str | None
    origin: dict[str, str] = field(default_factory=dict)  # field -> "selector" | "fallback"


def same_site(url: str, page_url: str) -> bool:
    """One site: the same host, ignoring a leading `www.`."""
    host = (urlsplit(url).hostname or "").removeprefix("www.")
    return host == (urlsplit(page_url).hostname or "").removeprefix("www.")


# The first <base href> anywhere in the document, as browsers take it (not only in <head>), but
# not one inside content that is not rendered as markup (noscript with scripts on, template, svg).
_BASE_HREFS = etree.XPath(
    "//base[@href][not(ancestor::noscript or ancestor::template or ancestor::svg)]/@href",
    smart_strings=False,
)


def link_base(page: Any, url: str) -> str:
    """What the page's relative links resolve against: its `<base href>` (itself relative to the
    page's URL), else the page's URL. Same-site checks still compare with the page's URL."""
    root = page_root(page)
    if not isinstance(root, etree._Element):
        return url
    hrefs = _BASE_HREFS(root)
    if not hrefs:
        return url
    try:
        base = urljoin(url, str(hrefs[0]).strip())
    except ValueError:  # an unparseable base ("http://[x/") is ignored, as browsers do
        return url
    return base if is_http_url(base) else url


def absolute_link(href: str, base: str, page_url: str) -> str | None:
    """An href resolved against the page's base; None when it cannot be parsed ("http://[x/"),
    so one broken link does not cost the rest of the page. An empty or fragment-only href ("#",
    "#top") names the page itself, as it always did here: a placeholder "#" next arrow must not
    become a link to the base (often the site's home page)."""
    href = href.strip()
    try:
        return urljoin(page_url if not href or href.startswith("#") else base, href)
    except ValueError:
        return None


def site_link(href: str, base: str, page_url: str) -> str | None:
    """An href resolved as absolute_link does, when it is an http(s) link on the page's site."""
    link = absolute_link(href, base, page_url)
    return link if link is not None and is_http_url(link) and same_site(link, page_url) else None


def _article_link(href: str | None, base: str, page_url: str) -> str | None:
    url = site_link(href, base, page_url) if href else None
    if url is None or is_attachment(url):
        return None
    return url.split("#", 1)[0]


def extract_listing(response: Selector, url: str, selectors: Selectors) -> Listing:
    origin: dict[str, str] = {}
    entries: list[Entry] = []
    # Only for configured selectors, which read newsmon's own parse of the page: automatic
    # detection reads parsel's and finds the base there, so the page is not parsed twice.
    base = link_base(response, url) if selectors.item or selectors.next_page else url
    if selectors.item:
        entries = _entries_from_selectors(response, url, base, selectors)
        origin["item"] = "selector" if entries else "fallback"
    else:
        origin["item"] = "automatic"
    if not entries:
        entries = _entries_by_fallback(response, url)
    next_page = None
    if selectors.next_page:
        next_page = _configured_next_page(response, url, base, selectors.next_page)
        origin["next_page"] = "selector" if next_page else "fallback"
    else:
        origin["next_page"] = "automatic"
    if next_page is None:
        next_page = next_page_fallback(response, url)
    return Listing(entries=_dedupe(entries), next_page=next_page, origin=origin)


def configured_next_page(response: Selector, url: str, selectors: Selectors) -> str | None:
    """The next listing page that the configured selector names, as extract_listing finds it;
    None without a selector or a link (extract_listing then tries its fallbacks)."""
    if not selectors.next_page:
        return None
    return _configured_next_page(response, url, link_base(response, url), selectors.next_page)


def _configured_next_page(response: Selector, url: str, base: str, expression: str) -> str | None:
    return _first_link([serialized(m) for m in matches(response, expression)], base, url)


def _first_link(values: list[str], base: str, page_url: str) -> str | None:
    for value in values:
        if link := site_link(value, base, page_url):
            return link
    return None


def _entries_from_selectors(
    response: Selector, url: str, base: str, selectors: Selectors
) -> list[Entry]:
    link_expr = selectors.link or "a::attr(href)"
    entries = []
    for node in matches(response, selectors.item):
        links = matches(node, link_expr)
        link = _article_link(serialized(links[0]) if links else None, base, url)
        if link is None:
            continue
        entries.append(
            Entry(
                url=link,
                title=_field_text(node, selectors.title),
                date=_field_text(node, selectors.date),
                summary=_field_text(node, selectors.summary),
            )
        )
    return entries


def _field_text(node: Match, expression: str | None) -> str | None:
    return joined_text(matches(node, expression)) if expression else None


def _entries_by_fallback(response: Selector, url: str) -> list[Entry]:
    """Automatic detection (scraper/auto.py), else the links repeating under one path prefix."""
    from scraper import auto

    return auto.detect_entries(response, url) or _entries_by_path(response, url)


def _entries_by_path(response: Selector, url: str) -> list[Entry]:
    """Links that repeat under one path prefix below the listing's path are the articles."""
    base_path = urlsplit(url).path.rstrip("/") + "/"
    base = link_base(_parsel(response), url)
    links: list[tuple[str, Selector]] = []
    for anchor in response.css("a[href]"):
        link = _article_link(anchor.attrib.get("href"), base, url)
        if link is None:
            continue
        parts = urlsplit(link)
        query = dict(parse_qsl(parts.query))
        if (
            any(PAGINATION_PARAMS.match(key) for key in query)
            or parts.path.rstrip("/") + "/" == base_path
        ):
            continue
        if parts.path.startswith(base_path) or base_path == "/":
            links.append((link, anchor))
    groups = Counter(_parent_path(link) for link, _ in links)
    if not groups:
        return []
    prefix, count = groups.most_common(1)[0]
    if count < 2:
        return []
    return [
        _entry_from_anchor(link, anchor) for link, anchor in links if _parent_path(link) == prefix
    ]


def _parent_path(link: str) -> str:
    path = urlsplit(link).path.rstrip("/")
    return path.rsplit("/", 1)[0]


def _entry_from_anchor(link: str, anchor: Selector) -> Entry:
    title = text_of(anchor.xpath(".//text()"))
    date = None
    # XPath returns ancestors in document order (farthest first): look nearest first.
    for container in reversed(anchor.xpath("ancestor::*[position() <= 3]")):
        text = normalize_whitespace(" ".join(container.xpath(".//text()").getall()))
        if len(text) > 600:
            break
        date = find_date(text)
        if date:
            break
    return Entry(url=link, title=title, date=date)


def _dedupe(entries: list[Entry]) -> list[Entry]:
    """One entry per link, keeping the first that has a title (a thumbnail link often has none)."""
    best: dict[str, Entry] = {}
    for entry in entries:
        if entry.url not in best or (not best[entry.url].title and entry.title):
            best[entry.url] = entry
    return list(best.values())


def _parsel(response: Any) -> Any:
    """The parsel Selector the fallbacks read anyway (a response's is built once and cached), so
    finding the base does not parse the page a second time with newsmon's own parser."""
    return getattr(response, "selector", response)


def next_page_fallback(response: Selector, url: str) -> str | None:
    base = link_base(_parsel(response), url)
    for href in response.css("a[rel~=next]::attr(href), link[rel~=next]::attr(href)").getall():
        link = _first_link([href], base, url)
        if link:
            return link
    for anchor in response.css("a[href]"):
        label = normalize_whitespace(" ".join(anchor.xpath(".//text()").getall())).lower()
        classes = anchor.attrib.get("class", "")
        if label in NEXT_LINK_TEXTS or "page-next" in classes or "next" in classes.split():
            link = _first_link([anchor.attrib["href"]], base, url)
            if link:
                return link
    from scraper import auto

    return auto.next_page(response, url)  # wider labels, then PAGEN_1=N, page=N, /page/N/


@dataclass
class ArticleFields:
    title: str | None
    date: str | None  # raw date text, parsed later by the normalizer
    body_html: str | None
    canonical: str | None
    attachments: list[str]
    origin: dict[str, str]


def extract_article(response: Selector, url: str, selectors: Selectors) -> ArticleFields:
    origin: dict[str, str] = {}
    title = _configured(response, selectors.article_title, "article_title", origin)
    if title is None:
        title = article_title_fallback(response)
    date = _configured(response, selectors.article_date, "article_date", origin)
    if date is None or find_date(date) is None:
        date = article_date_fallback(response, title) or date
    body_html = None
    if selectors.article_body:
        found = matches(response, selectors.article_body)
        body_html = "".join(serialized(match) for match in found) or None
        origin["article_body"] = "selector" if body_html else "fallback"
    else:
        origin["article_body"] = "automatic"
    if not body_html:
        body_html = article_body_fallback(response, title)
    canonical = (matches(response, "link[rel=canonical]::attr(href)") or [None])[0]
    if canonical and not is_http_url(canonical.strip()):  # relative: as the page's links resolve
        # An unparseable one stays as it is: prefer_canonical rejects it and keeps the page's URL.
        canonical = absolute_link(canonical, link_base(response, url), url) or canonical
    return ArticleFields(
        title=title,
        date=date,
        body_html=body_html,
        canonical=canonical,
        attachments=_attachments(response, url),
        origin=origin,
    )


def _configured(
    response: Selector, expression: str | None, key: str, origin: dict[str, str]
) -> str | None:
    if not expression:
        origin[key] = "automatic"
        return None
    value = joined_text(matches(response, expression))
    origin[key] = "selector" if value else "fallback"
    return value


def article_title_fallback(response: Selector) -> str | None:
    """The `<h1>` the page's `<title>` / og:title names, else og:title, h1, `<title>`."""
    from scraper import auto

    return auto.article_title(response)


def article_date_fallback(response: Selector, title: str | None) -> str | None:
    """Date meta tags, a `<time>` in the article, a date printed near the title, any `<time>`;
    trafilatura's date only when none of these (the project's own date rules) finds one."""
    from scraper import auto

    *meta, any_time = DATE_META
    for expression in meta:
        value = response.css(expression).get()
        if value and find_date(value):
            return value.strip()
    found = auto.scoped_time(response) or _date_near_title(response, title)
    if found:
        return found
    value = response.css(any_time).get()
    if value and find_date(value):
        return value.strip()
    return auto.article_date(response, title)


def _date_near_title(response: Selector, title: str | None) -> str | None:
    heading = response.css("h1") or response.css("h2")
    for node in heading[:1].xpath("ancestor-or-self::*[position() <= 3]"):
        text = normalize_whitespace(" ".join(node.xpath(".//text()").getall()))
        if title:
            text = text[text.find(title) :] if title in text else text
        found = find_date(text[:400])
        if found:
            return found
    return None


def article_body_fallback(response: Selector, title: str | None = None) -> str | None:
    """trafilatura's main text (scraper/auto.py); else a known content container, else the
    element holding the most paragraph text (not link text)."""
    from scraper import auto

    body = auto.main_text_html(response, title)  # the title found already: not looked up again
    if body:
        return body
    for expression in BODY_CANDIDATES:
        nodes = response.css(expression)
        if len(nodes) == 1:
            return nodes.get()
    best, best_score = None, 0
    for node in response.xpath("//div | //section | //main | //td"):
        paragraphs = node.xpath("./p[not(ancestor::a)]//text()[not(ancestor::a)]").getall()
        score = sum(len(text.strip()) for text in paragraphs)
        if score > best_score:
            best, best_score = node, score
    return best.get() if best is not None else None


# Any href whose path could end in a document extension (checked on the unquoted text, as
# is_attachment does). Pages carry dozens of links and rarely a document: this look at the raw
# hrefs spares the ancestor test and URL parsing of every link, once half an article's extraction.
# An href with no path of its own takes the page's, which is not a document, so an href that does
# not pass this never names one.
_MAY_BE_DOCUMENT = re.compile("|".join(map(re.escape, ATTACHMENT_EXTENSIONS)), re.IGNORECASE)
_ALL_HREFS = etree.XPath("//a/@href", smart_strings=False)
_CONTENT_HREFS = etree.XPath(
    "//a[not(ancestor::header or ancestor::footer or ancestor::nav or ancestor::aside)]/@href",
    smart_strings=False,
)


def _may_be_document(href: str) -> bool:
    return bool(_MAY_BE_DOCUMENT.search(unquote(href)))


def _attachments(response: Selector, url: str) -> list[str]:
    """Document links of the article, not of the site's header, footer, menus or sidebar."""
    root = page_root(response)
    if not any(_may_be_document(href) for href in _ALL_HREFS(root)):
        return []
    hrefs = [href for href in _CONTENT_HREFS(root) if _may_be_document(href)]
    base = link_base(root, url)
    links = (absolute_link(href, base, url) for href in hrefs)
    return list(
        dict.fromkeys(link for link in links if link and is_http_url(link) and is_attachment(link))
    )
