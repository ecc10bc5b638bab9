"""Normalisation shared by the spider and the archive.

Everything here is pure (no I/O, no network) so the spider, the pipelines and the archive agree
on what "the same URL", "the same date" and "the same text" mean. Two articles are one row only if
their canonical URLs are equal, and a revision is recorded only if the content hash changes, so
these functions must be deterministic and must never invent data (no "today" for a bad date).
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from collections.abc import Iterable, Sequence
from datetime import datetime, time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import SplitResult, unquote, unquote_plus, urljoin, urlsplit, urlunsplit

import cssselect
import cssselect.parser
from lxml import etree
from lxml.cssselect import CSSSelector
from w3lib.url import safe_url_string

if TYPE_CHECKING:
    from dateparser.date import DateDataParser

__all__ = [
    "DEFAULT_DROP_SELECTORS",
    "canonical_url",
    "clean_content_hash",
    "clean_text",
    "content_hash",
    "find_date",
    "is_attachment",
    "is_http_url",
    "normalize_whitespace",
    "parse_date",
    "prefer_canonical",
    "section_from_url",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Whitespace
# --------------------------------------------------------------------------------------------------

# Invisible characters that str.split() does not split at. They are deleted, not turned into
# spaces, because "a\u200bb" renders as "ab": a space would change the word for search and for
# the content hash.
_INVISIBLE: Final = ("\u200b", "\u2060", "\ufeff", "\u00ad")
_INVISIBLE_RE: Final = re.compile(f"[{''.join(_INVISIBLE)}]")


def _without_invisible(text: str) -> str:
    if any(char in text for char in _INVISIBLE):  # rare; four scans cost less than one regex
        return _INVISIBLE_RE.sub("", text)
    return text


def normalize_whitespace(text: str | None) -> str:
    """Collapse whitespace runs (NBSP, tabs, newlines) to one space so text compares by words."""
    if not text:
        return ""
    # str.split() splits at every Unicode whitespace run (NBSP, thin and ideographic spaces
    # included), the characters regex \s matches; join/split costs half of re.sub.
    return " ".join(_without_invisible(text).split())


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------

TRACKING_PARAMS: Final = frozenset(
    {
        "sphrase_id",  # Bitrix search-result highlighting
        "phpsessid",
        "clear_cache",  # Bitrix admin/cache switches
        "bitrix_include_areas",
        "back_url_admin",
        "fbclid",
        "gclid",
        "yclid",
        "_openstat",
    }
)
TRACKING_PREFIXES: Final = ("utm_",)
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
INDEX_FILES: Final = frozenset({"index.php", "index.html", "index.htm"})
ATTACHMENT_EXTENSIONS: Final = (
    ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".rtf", ".odt", ".ppt", ".pptx", ".zip",
)  # fmt: skip

_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")
_PCT_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_LONE_PCT_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SLASHES_RE: Final = re.compile(r"/{2,}")


def canonical_url(url: str, base: str | None = None) -> str:
    """Return the one spelling of ``url`` used as the archive key.

    Equivalent spellings (host case, default port, fragment, tracking parameters, ``index.php``,
    doubled slashes, escape case) map to one string so an article is stored once. Query order is
    kept: Bitrix treats some parameters positionally and sorting would hide real differences.
    Raises ValueError for URLs urllib cannot split (check with ``is_http_url`` first).
    """
    url = url.strip()
    if not base and (found := _IS_CANONICAL_RE.fullmatch(url)):
        plain, port, query = found["plain"], found["port"], found["query"]
        if not _ends_with_index_file(plain) and (
            not port or (int(port) <= 65535 and int(port) != DEFAULT_PORTS[found["scheme"]])
        ):
            # The common case, a crawl's own URLs: ~1 µs instead of ~13.
            if query is None:
                return url
            query = _clean_query(query)  # tracking parameters go; plain pairs stay as they are
            return f"{plain}?{query}" if query else plain
    return _canonicalize(url, base)


# URLs canonical_url returns unchanged, but for the tracking parameters of their query: lower-case
# ASCII host without trailing dot, no port or a port other than the default one written without
# leading zeros, a path of plain characters without empty or dot segments, a query of unreserved
# characters, "=" and "&" only, no fragment, no escapes.
_HOST_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_PLAIN_SEGMENT: Final = r"[A-Za-z0-9_~!$&'()*+,;=:@-]+(?:\.[A-Za-z0-9_~!$&'()*+,;=:@-]+)*"
_IS_CANONICAL_RE: Final = re.compile(
    rf"(?P<plain>(?P<scheme>https?)://{_HOST_LABEL}(?:\.{_HOST_LABEL})*"
    rf"(?::(?P<port>[1-9][0-9]{{0,4}}))?/(?:{_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*/?)?)"
    r"(?:\?(?P<query>[A-Za-z0-9_.~=&-]*))?"
)


def _ends_with_index_file(url: str) -> bool:
    return url.rpartition("/")[2].lower() in INDEX_FILES


def _canonicalize(url: str, base: str | None) -> str:
    if base:
        url = urljoin(base, url)
    # w3lib is what Scrapy applies to request URLs: IDNA host, UTF-8 percent-encoding of non-ASCII.
    parts = urlsplit(safe_url_string(url))
    scheme = parts.scheme.lower()
    if not parts.netloc:  # mailto:, javascript: and other opaque URLs: nothing to fold
        return urlunsplit((scheme, "", parts.path, parts.query, ""))
    return urlunsplit(
        (scheme, _normalize_netloc(parts, scheme), _normalize_path(parts.path),
         _clean_query(parts.query), "")
    )  # fmt: skip


def _normalize_netloc(parts: SplitResult, scheme: str) -> str:
    """Lowercase the host and drop the scheme's default port; keep userinfo as given."""
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:  # IPv6 literal: urllib strips the brackets, put them back
        host = f"[{host}]"
    port = parts.port  # ValueError for a non-numeric port, as documented
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{host}"
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return netloc


def _normalize_path(path: str) -> str:
    """Fold doubled slashes, dot segments and a trailing index file; keep the trailing slash."""
    path = _normalize_percent(_SLASHES_RE.sub("/", path))
    if "/." in path:
        # urljoin implements RFC 3986 remove_dot_segments; a dummy base gives us just that step.
        path = urlsplit(urljoin("http://h/", path)).path
    head, slash, last = path.rpartition("/")
    if slash and last.lower() in INDEX_FILES:
        path = head + "/"
    return path or "/"


def _clean_query(query: str) -> str:
    """Drop tracking/session parameters, keep the rest byte-for-byte in their original order.

    Written by hand because urllib's parse_qsl/urlencode round trip re-encodes values (``+`` vs
    ``%20``) and w3lib's url_query_cleaner matches names case-sensitively and has no prefixes.
    """
    kept = []
    for pair in query.split("&"):
        if not pair:
            continue
        name = unquote_plus(pair.partition("=")[0]).strip().lower()
        if name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES):
            continue
        kept.append(_normalize_percent(pair))
    return "&".join(kept)


def _normalize_percent(text: str) -> str:
    """Apply the RFC 3986 safe normalisations: upper-case escapes, decode unreserved characters."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else "%" + match[1].upper()

    return _PCT_RE.sub(fix, _LONE_PCT_RE.sub("%25", text))


def prefer_canonical(url: str, canonical_href: str | None) -> str:
    """Use the page's ``<link rel=canonical>`` only when it can be trusted.

    A canonical on another host (syndication, CDN, mirror) or a non-HTTP one is ignored, and so is
    a canonical pointing at the site root from a deeper page: misconfigured CMS templates emit the
    home page as every page's canonical, which would merge every article into one row.
    """
    page = canonical_url(url)
    href = (canonical_href or "").strip()
    if not href or href == url.strip():
        return page
    # An absolute href in canonical form needs no joining: the fast path of canonical_url.
    base = None if _IS_CANONICAL_RE.fullmatch(href) else url
    try:
        candidate = canonical_url(href, base=base)
    except ValueError:
        logger.debug("unusable canonical %r on %s", canonical_href, url)
        return page
    if not is_http_url(candidate) or _bare_host(candidate) != _bare_host(page):
        return page
    cand_parts, page_parts = urlsplit(candidate), urlsplit(page)
    if cand_parts.path == "/" and not cand_parts.query and page_parts.path != "/":
        logger.debug("ignoring root canonical %s on %s", candidate, url)
        return page
    return candidate


def _bare_host(url: str) -> str:
    """Host without a leading ``www.``: the www and bare names of one site are one host."""
    return (urlsplit(url).hostname or "").removeprefix("www.")


def is_http_url(url: str) -> bool:
    """True for fetchable http(s) URLs; hrefs also carry mailto:, javascript:, data:, file: ..."""
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a malformed port makes the URL unusable (and canonical_url raise)
    except ValueError:
        return False
    return parts.scheme.lower() in DEFAULT_PORTS and bool(parts.hostname)


def is_attachment(url: str) -> bool:
    """True when the URL path names a document file, which is archived as an attachment link."""
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return False
    return unquote(path).lower().endswith(ATTACHMENT_EXTENSIONS)


def _path_segments(url: str) -> list[str]:
    """The unescaped, non-empty segments of the URL's path."""
    if found := _IS_CANONICAL_RE.fullmatch(url):  # the archive's own URLs: nothing to unescape
        after_scheme = found["plain"].partition("://")[2]
        return [s for s in after_scheme[after_scheme.index("/") :].split("/") if s]
    # urlsplit caches 128 URLs; one it has not seen costs twice the fast path.
    return _parsed_path_segments(url)


def _parsed_path_segments(url: str) -> list[str]:
    return [unquote(s) for s in urlsplit(url.strip()).path.split("/") if s]


def section_from_url(url: str) -> str | None:
    """Section of an article from its URL: ``/news/<section>/<slug>/`` or else the first segment.

    The last path segment is the article itself, so only its directory is considered.
    """
    directory = _path_segments(url)[:-1]
    lowered = [s.lower() for s in directory]
    if "news" in lowered:
        after = lowered.index("news") + 1
        if after < len(directory):
            return directory[after]
    return directory[0] if directory else None


# --------------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------------

DEFAULT_LANGUAGES: Final = ("en", "ru")

# dateparser turns a settings dict into a Settings object on every parse() call; building one
# DateDataParser per language tuple from this constant (see _date_parser) skips that, ~40% faster.
DATEPARSER_SETTINGS: Final = {
    "DATE_ORDER": "DMY",  # dd.mm and dd/mm everywhere, never US month-first
    "PREFER_DAY_OF_MONTH": "first",
    # Without all three parts dateparser fills the gaps from today: "April 2024" would become
    # a made-up day, "22 April" this year. Archives need real dates, so partial text is None.
    "REQUIRE_PARTS": ["day", "month", "year"],
    # Only absolute parsers: "relative-time" turns "yesterday"/"2 hours ago" into now-based dates,
    # "timestamp" reads any 10-digit id as epoch seconds, "no-spaces-time" reads bare digit runs.
    "PARSERS": ["custom-formats", "absolute-time"],
    # RETURN_AS_TIMEZONE_AWARE is left at its default: aware only when the text names an offset,
    # which keeps "+03:00". Setting it to False would silently drop a stated offset.
}

_NUMERIC_DATE_RE: Final = re.compile(
    r"(?P<d>\d{1,2})(?P<sep>[./-])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})"
    r"(?:[\sT,]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?"
)
_ISO_DATE_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_TIME_RE: Final = re.compile(r"\d{1,2}:\d{2}|\d\s*[ap]\.?m\b", re.IGNORECASE)


def parse_date(text: str | None, languages: Sequence[str] | None = None) -> str | None:
    """Read a date as ISO 8601 (date, date+time, or date+time+offset, as precise as the text).

    Returns None, never today's date, for empty, partial, relative or unreadable text.
    ``languages`` defaults to English and Russian (auto-detection is slow and guesses wrong on
    short strings); tags like ``en-US`` are reduced to ``en``.
    """
    cleaned = normalize_whitespace(text)
    if not cleaned:
        return None
    result = _parse_date_cached(cleaned, _language_codes(tuple(languages or ())))
    if result is None:
        logger.debug("unparseable date %r", text)
    return result


@lru_cache(maxsize=4096)
def _parse_date_cached(text: str, languages: tuple[str, ...]) -> str | None:
    """Regex fast path for the common numeric forms, dateparser (~1 ms) only for the rest.

    Cached because listing and article pages repeat the same date strings many times per crawl.
    """
    if match := _NUMERIC_DATE_RE.fullmatch(text):
        return _from_numeric(match)
    if _ISO_DATE_RE.fullmatch(text):
        return _from_iso(text)
    parsed = _date_parser(languages).get_date_data(text).date_obj
    if parsed is None:
        return None
    return _format_datetime(parsed, has_time=bool(_TIME_RE.search(text)))


@lru_cache(maxsize=64)
def _language_codes(languages: tuple[str, ...]) -> tuple[str, ...]:
    """dateparser wants bare codes; pages and configs give ``en-US``, ``ru_RU``, ``EN``."""
    codes = (re.split(r"[-_]", lang.strip(), maxsplit=1)[0].lower() for lang in languages)
    return tuple(dict.fromkeys(code for code in codes if code)) or DEFAULT_LANGUAGES


@lru_cache(maxsize=16)
def _date_parser(languages: tuple[str, ...]) -> DateDataParser:
    """One configured parser per language set.

    Codes come from page or config data and dateparser only rejects unknown ones while parsing,
    so they are checked here: unknown codes are dropped with a warning (once per language set)
    instead of failing every article.
    """
    # Imported here: dateparser takes ~60 ms to import, and most sites' dates are numeric or ISO,
    # which the regex fast paths read without it.
    from dateparser.data import languages_info
    from dateparser.date import DateDataParser

    supported = frozenset(languages_info.language_order)
    known = tuple(code for code in languages if code in supported) or DEFAULT_LANGUAGES
    if known != languages:
        logger.warning("date languages %s not all known to dateparser; using %s", languages, known)
    return DateDataParser(languages=list(known), settings=DATEPARSER_SETTINGS)


def _from_numeric(match: re.Match[str]) -> str | None:
    """Day-first numeric date; an impossible date (31.02, month 13) is None, not a swap."""
    year = int(match["y"])
    if len(match["y"]) == 2:  # same pivot as strptime %y: 00-68 -> 20xx, 69-99 -> 19xx
        year += 2000 if year < 69 else 1900
    has_time = match["H"] is not None
    try:
        parsed = datetime(
            year, int(match["m"]), int(match["d"]),
            int(match["H"] or 0), int(match["M"] or 0), int(match["S"] or 0),
        )  # fmt: skip
    except ValueError:
        return None
    return _format_datetime(parsed, has_time=has_time)


def _from_iso(text: str) -> str | None:
    """ISO 8601 as written by ``<time datetime>`` and ``article:published_time``."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _format_datetime(parsed, has_time=len(text) > 10)


def _format_datetime(value: datetime, *, has_time: bool) -> str:
    """As precise as the source: offset if given, time if given, else just the date."""
    if value.tzinfo is not None:
        return value.isoformat(timespec="seconds")
    if has_time or value.time() != time(0, 0):
        return value.replace(microsecond=0).isoformat(timespec="seconds")
    return value.date().isoformat()


_EN_MONTH: Final = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_RU_MONTH: Final = (  # genitive: the form a month takes after a day number ("22 апреля")
    r"января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря"
    r"|янв|фев|мар|апр|июн|июл|авг|сент?|окт|ноя|дек"
)
# Explicit patterns, not dateparser.search.search_dates. Measured on the seed article: with default
# settings search_dates returns "April" (from "On April 5-6"), "may" (the verb) and "26 April"
# (from "From 22 to 26 April") as current-year dates; even with DATEPARSER_SETTINGS it read
# "3 May and 22" as 2022-05-03; and it took 34-250 ms per article against ~0.06 ms here.
# A match below needs day, month and year, so it can only be a real, complete date.
_NUMERIC_IN_TEXT: Final = (
    r"\d{1,2}(?P<sep>[./])\d{1,2}(?P=sep)\d{4}(?:,?[ ]+\d{1,2}:\d{2}(?::\d{2})?)?"
)
_DAY_MONTH_YEAR: Final = rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_EN_MONTH}|{_RU_MONTH})\.?,?\s+\d{{4}}"
_MONTH_DAY_YEAR: Final = rf"(?:{_EN_MONTH})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
_DATE_IN_TEXT_RE: Final = re.compile(
    rf"(?<![\w.\-/])(?:{_ISO_DATE_RE.pattern}|{_NUMERIC_IN_TEXT}|{_DAY_MONTH_YEAR}|{_MONTH_DAY_YEAR})"
    r"(?!\w)",
    re.IGNORECASE,
)


def find_date(text: str | None, languages: Sequence[str] | None = None) -> str | None:
    """First complete date in running text (e.g. a title line "... 06.04.2022"), or None."""
    if not text:
        return None
    for match in _DATE_IN_TEXT_RE.finditer(text):
        if parsed := parse_date(match[0], languages):
            return parsed
    return None


# --------------------------------------------------------------------------------------------------
# HTML -> text
# --------------------------------------------------------------------------------------------------

# Never article text. head/title: cleaning a whole document must not start with the <title>;
# select/textarea: form controls outside a <form> (Bitrix year filters) still carry option text.
DROP_TAGS: Final = (
    "script", "style", "noscript", "iframe", "form", "button", "svg", "template",
    "head", "title", "select", "textarea",
)  # fmt: skip
DEFAULT_DROP_SELECTORS: Final[tuple[str, ...]] = (
    # share widgets and social links
    ".share", ".share-buttons", "[class*=share]", ".ya-share2", ".social", "[class*=social]",
    # navigation
    "nav", ".breadcrumb", ".breadcrumbs", ".news-back", ".back-link", ".pagination",
    ".modern-page-navigation",
    # "latest news" and other teaser lists around the article
    ".latest-news", "[class*=last-news]", "[class*=latest-news]", ".news-list", "aside",
)  # fmt: skip
_BLOCK_TAGS: Final = (
    "address", "article", "aside", "blockquote", "caption", "center", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5",
    "h6", "header", "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
)  # fmt: skip
_HEADING_TAGS: Final = ("h1", "h2", "h3", "h4", "h5", "h6")
# Headings that title a block of links to other articles, not part of the article.
TEASER_HEADINGS: Final = frozenset(
    {
        "latest news", "other news", "related news", "more news", "read also", "see also",
        "последние новости", "другие новости", "читайте также", "смотрите также",
        "новости по теме", "похожие новости",
    }
)  # fmt: skip
NAV_PHRASES: Final = (
    "go back", "back to the section", "back to the all news", "back to all news", "back to news",
    "back to the news", "back to the list", "back to list", "back", "share", "print", "all news",
    "назад", "вернуться назад", "вернуться в раздел", "вернуться к списку",
    "вернуться к списку новостей", "все новости", "возврат к списку", "поделиться",
    "версия для печати", "печать",
)  # fmt: skip
_NAV_SEP: Final = r"[\s«»‹›←→<>.,:;!…|/\\·•–—-]"
# A line made only of navigation phrases and separators ("← Back to news | Print").
_NAV_LINE_RE: Final = re.compile(
    rf"(?:{_NAV_SEP}*(?:{'|'.join(sorted(map(re.escape, NAV_PHRASES), key=len, reverse=True))})"
    rf"(?!\w))+{_NAV_SEP}*",
    re.IGNORECASE,
)
_BREAK: Final = "\x00"  # paragraph marker; HTML parsers never yield NUL in text


def clean_text(html: Any, drop_selectors: Iterable[str] = DEFAULT_DROP_SELECTORS) -> str:
    """Plain article text: paragraphs separated by one blank line, page furniture removed.

    Used for the stored body, full-text search and the content hash, so widgets, teaser lists and
    back links must not leak in (they change independently of the article). A BeautifulSoup Tag
    is read through its markup, never modified. The tree is lxml's (libxml2's parser, as bs4's
    "lxml" builder uses), so cleaning costs about a tenth of a BeautifulSoup tree.
    """
    parsed = _as_tree(html)
    if parsed is None:
        return ""
    scope, top = parsed
    _drop_noise(scope, tuple(drop_selectors))
    for heading in list(scope.iterdescendants(_HEADING_TAGS)):
        if _attached(heading, scope) and _is_teaser_heading(heading):
            _drop_heading_block(heading, top)
    # normalize_whitespace of each paragraph, done on the whole text at once: a whitespace run
    # never spans a _BREAK, which is not whitespace.
    text = normalize_whitespace(_marked_text(scope))
    paragraphs = (p.strip() for p in text.split(_BREAK))
    return "\n\n".join(p for p in paragraphs if p and not _NAV_LINE_RE.fullmatch(p))


# Comments and processing instructions are never text; dropping them while parsing keeps the
# text on both sides together, as bs4's get_text() did. The markup is handed over as UTF-8 (an
# XML declaration or a <meta charset> must not re-decode text already decoded), and huge_tree
# lifts libxml2's nesting limit, past which it would silently drop the rest of the page. It is
# etree's HTML parser, the one lxml.html's wraps: the same tree, without lxml.html's element
# classes, whose lookup (a Python call for every element cleaning touches) cost a tenth of
# cleaning an article; nothing here uses their methods.
_PARSER: Final = etree.HTMLParser(
    encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True
)
# Ruby annotations: bs4's get_text() skipped their strings (not their block breaks).
_MUTED_TAGS: Final = ("rt", "rp")
_BLOCK_SET: Final = frozenset(_BLOCK_TAGS)


def _as_tree(html: Any) -> tuple[etree._Element, etree._Element | None] | None:
    """(scope, stop): the element to clean, and the node a teaser block may not climb past.

    Markup is cleaned as a whole document (no stop: a block may grow up to <html>). A Tag is
    cleaned on its own, as if it were the document: only what is inside it is dropped, and a
    block stops below it.
    """
    if html is None:
        return None
    name = None if isinstance(html, str) else getattr(html, "name", None)
    markup = html if isinstance(html, str) else str(html)
    if not markup.strip():
        return None
    try:
        data = markup.replace(_BREAK, "").encode("utf-8", "replace")
        root = etree.fromstring(data, parser=_PARSER)
    except (etree.ParserError, ValueError):  # not parseable at all
        return None
    if root is None:  # nothing but comments
        return None
    if name in (None, "[document]"):
        return root, None
    body = root.find("body")
    if name == "html" or body is None:
        return root, root
    if name == "body" or not len(body):
        return body, body
    return body[0], body[0]


@lru_cache(maxsize=256)
def _selector(selectors: tuple[str, ...]) -> CSSSelector | None:
    return CSSSelector(", ".join(selectors), translator="html") if selectors else None


_CLASS_ATTRIBUTES: Final = etree.XPath("descendant-or-self::*/@class")  # compiled once
_CLASS_VALUE_OPERATORS: Final = frozenset({"=", "~=", "^=", "$=", "*=", "|="})


NoisePlan = tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...]]


@lru_cache(maxsize=32)
def _noise_plan(selectors: tuple[str, ...]) -> NoisePlan:
    """How to apply drop selectors cheaply: (tag names, (class token, selector) pairs, the rest).

    libxml2 walks the tree once per selector, once the larger part of cleaning an article. Bare
    tag names ("nav") are stripped with the non-text tags in one pass. A selector that names a
    class only matches an element with that token in its class attribute, and most pages lack
    most of them: one look at the page's class attributes skips those. Only the matched element's
    own compound is read (not its ancestors, which may be outside the cleaned scope, nor :not()),
    and case-insensitive [class*=x i] gives no token.
    """
    tags, guarded, always = [], [], []
    for text in selectors:
        for parsed in cssselect.parse(text):
            tree = parsed.parsed_tree
            if (
                isinstance(tree, cssselect.parser.Element)
                and tree.element not in (None, "*")
                and tree.namespace is None
                and parsed.pseudo_element is None
            ):
                tags.append(tree.element.lower())
                continue
            token = _class_token(tree)
            if token:
                guarded.append((token, text))
            else:
                always.append(text)
    return tuple(dict.fromkeys(tags)), tuple(guarded), tuple(dict.fromkeys(always))


def _class_token(tree: Any) -> str | None:
    node = tree.subselector if isinstance(tree, cssselect.parser.CombinedSelector) else tree
    while node is not None:
        if isinstance(node, cssselect.parser.Class):
            return node.class_name
        if isinstance(node, cssselect.parser.Attrib) and node.attrib == "class":
            value = getattr(node.value, "value", node.value)
            if node.operator in _CLASS_VALUE_OPERATORS and value and node.flag != "i":
                return str(value)
        node = getattr(node, "selector", None)
    return None


def _drop(element: etree._Element) -> None:
    """Remove an element and everything in it, keeping the text that follows it (what
    lxml.html's drop_tree does)."""
    parent = element.getparent()
    if parent is None:
        element.clear()
        return
    if element.tail:
        previous = element.getprevious()
        if previous is None:
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    parent.remove(element)


def _attached(element: etree._Element, root: etree._Element) -> bool:
    while element is not None:
        if element is root:
            return True
        element = element.getparent()
    return False


def _drop_noise(scope: etree._Element, selectors: tuple[str, ...]) -> None:
    """Remove non-text tags and everything the selectors match, inside `scope`."""
    tags, guarded, always = _noise_plan(selectors)
    etree.strip_elements(scope, *DROP_TAGS, *tags, with_tail=False)  # never `scope` itself
    for muted in scope.iter(_MUTED_TAGS):
        for element in muted.iter():
            element.text = None
            if element is not muted:
                element.tail = None
    if guarded:
        classes = " ".join(_CLASS_ATTRIBUTES(scope))
        present = tuple(dict.fromkeys(text for token, text in guarded if token in classes))
        matcher = _selector(always + present)
    else:
        matcher = _selector(always)
    if matcher is None:
        return
    whole_document = scope.getparent() is None
    for element in matcher(scope):
        if element is scope and not whole_document:
            continue  # a Tag is cleaned, never dropped as a whole
        if _attached(element, scope):  # not already gone with a matched ancestor
            _drop(element)


def _text(element: etree._Element, separator: str = "") -> str:
    return separator.join(element.itertext())


def _is_teaser_heading(heading: etree._Element) -> bool:
    """True for "Latest news" / "Читайте также" style headings."""
    text = normalize_whitespace(_text(heading, " ")).strip(" :.!»«→←").casefold()
    return text in TEASER_HEADINGS


def _heading_rank(element: etree._Element) -> int:
    """h1 -> 1 ... h6 -> 6; anything else ranks below every heading."""
    return int(element.tag[1]) if element.tag in _HEADING_TAGS else 99


def _drop_heading_block(heading: etree._Element, top: etree._Element | None) -> None:
    """Drop a teaser heading with the box it titles.

    The box is the nearest ancestor that starts with the heading, holds more text than it and no
    heading of equal or higher rank (so a wrapper that also holds the article is never taken). If
    there is no such box, the heading's section goes: its following siblings up to the next heading
    of equal or higher rank, as in the HTML outline.
    """
    rank, node = _heading_rank(heading), heading
    title = normalize_whitespace(_text(heading, " "))
    while (parent := node.getparent()) is not None and parent is not top:
        if not _starts_with(parent, node) or _has_peer_heading(parent, heading, rank):
            break
        node = parent
        if normalize_whitespace(_text(node, " ")) != title:
            _drop(node)
            return
    for sibling in list(node.itersiblings()):
        if _heading_rank(sibling) <= rank or _has_peer_heading(sibling, heading, rank):
            break
        _drop(sibling)
    _drop(node)


def _starts_with(parent: etree._Element, child: etree._Element) -> bool:
    """True when nothing with visible text comes before ``child`` inside ``parent``."""
    if parent.text and parent.text.strip():
        return False
    for element in parent:
        if element is child:
            return True
        if _text(element).strip() or (element.tail and element.tail.strip()):
            return False
    return False


def _has_peer_heading(container: etree._Element, heading: etree._Element, rank: int) -> bool:
    """True if ``container`` holds another heading of rank <= ``rank`` (another section)."""
    return any(
        h is not heading and _heading_rank(h) <= rank
        for h in container.iterdescendants(_HEADING_TAGS)
    )


def _marked_text(root: etree._Element) -> str:
    """Text with a _BREAK around every block element and at every <br>."""
    parts: list[str] = []
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag
        if event == "start":
            if tag in _BLOCK_SET or tag == "br":
                parts.append(_BREAK)
            elif tag in ("td", "th"):
                parts.append(" ")  # cells of a row stay one paragraph, but not glued together
            if element.text and tag != "br":
                parts.append(element.text)
            continue
        if tag in _BLOCK_SET:
            parts.append(_BREAK)
        if element.tail and element is not root:
            parts.append(element.tail)
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# Content hash
# --------------------------------------------------------------------------------------------------

_PARAGRAPH_SPLIT_RE: Final = re.compile(r"\n\s*\n")


def clean_content_hash(title: str, body: str) -> str:
    """content_hash of a title from normalize_whitespace and a body from clean_text.

    Those are in the hashed form already (paragraphs of single-spaced words, one blank line
    between them), so the text is hashed as it is, with the same result, for a fifth of the cost.
    """
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()


def content_hash(title: str | None, body: str | None) -> str:
    """sha256 of title and body, blind to whitespace-only changes but not to paragraph breaks.

    A revision is recorded when this changes, so re-wrapping, CRLF or NBSP must not count as an
    edit while any word change must.
    """
    body = (body or "").replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = (normalize_whitespace(p) for p in _PARAGRAPH_SPLIT_RE.split(body))
    normalized = normalize_whitespace(title) + "\n" + "\n\n".join(p for p in paragraphs if p)
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()
