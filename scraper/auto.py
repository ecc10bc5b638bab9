"""Automatic extraction: what a news page holds when no selector says so.

Listing pages: article links are the repeated links that share one place in the page (the same
chain of ancestors, e.g. `article > header > h2 > a`), preferably with title-like text, dates and
`<article>` elements around them; section indexes, search pages, downloads, tag / category /
author pages and pagination links are never entries. Pagination: `rel=next`, "next" / "older" /
"»" links, then numbered `PAGEN_N=`, `page=`, `/page/N/` links. Article pages: the title is the
`<h1>` the page's own `<title>` / `og:title` names; the body is trafilatura's main text (or the
site's content container when it holds the same text); dates follow the project's rules
(storage.normalize: day-first, English and Russian months) and only then trafilatura's.

Everything here is pure: a parsel Selector (or Scrapy TextResponse) and its URL in, values out.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lxml import etree
from parsel import Selector

from scraper.extract import Entry, link_base, site_link
from storage.normalize import (
    TEASER_HEADINGS,
    clean_text,
    find_date,
    is_attachment,
    normalize_whitespace,
)

# trafilatura and htmldate log every decision, and their complaints about a page's markup at
# ERROR; newsmon falls back to its own rules and logs what matters, so they stay quiet.
for _name in ("trafilatura", "htmldate", "courlan", "justext", "readability"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

# Path segments and query keys of pages that list or search articles but are not articles.
NON_ARTICLE_SEGMENTS = frozenset(
    {
        "tag", "tags", "category", "categories", "author", "authors", "search", "feed", "rss",
        "atom", "login", "logout", "register", "signup", "account", "cart", "wp-admin",
        "wp-login.php", "wp-json", "xmlrpc.php", "comments", "trackback", "print",
    }
)  # fmt: skip
NON_ARTICLE_PARAMS = frozenset(
    {"s", "q", "query", "search", "tag", "cat", "author", "replytocom", "share", "print", "format"}
)
PAGE_PARAM = re.compile(r"^(?:PAGEN_\d+|page|paged|p?page_?num(?:ber)?|start|offset)$", re.I)
PAGE_SEGMENT = re.compile(r"/page/(\d+)/?$")
DATE_ARCHIVE = re.compile(r"^/(?:\d{4})(?:/\d{1,2}){0,2}/?$")
MEDIA_EXTENSIONS = (
    ".xml", ".rss", ".json", ".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg", ".ico", ".css",
    ".js", ".mp3", ".mp4", ".avi", ".mov", ".webm", ".ogg", ".wav",
)  # fmt: skip
# Page furniture: links in these are never entries of the main list.
FURNITURE = (
    "ancestor::nav or ancestor::aside or ancestor::*[@role='navigation' or @role='banner' or "
    "@role='contentinfo' or @role='complementary' or @role='search'] or ancestor::form or "
    "ancestor::header[not(ancestor::article or ancestor::main or ancestor::section)] or "
    "ancestor::footer[not(ancestor::article or ancestor::main or ancestor::section)]"
)
NEXT_LABELS = frozenset(
    {
        "next", "next page", "older", "older posts", "older entries", "older articles",
        "more news", "load more", "show more", "»", "›", ">", ">>", "→",
        "след", "следующая", "следующая страница", "далее", "вперед", "вперёд", "ещё", "еще",
        "показать еще", "показать ещё", "более ранние", "предыдущие записи",
    }
)  # fmt: skip
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
MAX_CLIMB = 6  # levels above a link searched for its entry container


# -- URLs ------------------------------------------------------------------------------------------


def is_pagination_url(url: str) -> bool:
    parts = urlsplit(url)
    if PAGE_SEGMENT.search(parts.path):
        return True
    return any(PAGE_PARAM.match(key) for key, _ in parse_qsl(parts.query))


def is_non_article_url(url: str) -> bool:
    """Search, tag/category/author, feed, date-archive, media and download URLs."""
    parts = urlsplit(url)
    path = unquote(parts.path).lower()
    if is_attachment(url) or path.endswith(MEDIA_EXTENSIONS) or DATE_ARCHIVE.match(path):
        return True
    if any(segment in NON_ARTICLE_SEGMENTS for segment in path.split("/")):
        return True
    return any(key.lower() in NON_ARTICLE_PARAMS for key, _ in parse_qsl(parts.query))


def _directory(path: str) -> str:
    return path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"


def _is_section_index(path: str, listing_path: str) -> bool:
    """The listing itself, the site root, or a folder above the listing ("/news/" from below)."""
    path = path.rstrip("/") + "/"
    return path == "/" or _directory(listing_path).startswith(path)


def url_shape(url: str) -> str:
    """The folder of an article URL with numbers generalized: /2024/04/22/x/ -> /#/#/#/."""
    path = urlsplit(url).path.rstrip("/")
    folder = path.rsplit("/", 1)[0]
    return re.sub(r"\d+", "#", folder) + "/"


# -- listing pages ---------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One automatically found entry with the page elements it came from (for selectors)."""

    entry: Entry
    anchor: Any  # lxml element of the link
    container: Any  # lxml element: the largest ancestor holding only this entry


def _text(element: Any) -> str:
    return normalize_whitespace(" ".join(element.itertext())) if element is not None else ""


def _signature(anchor: Any) -> tuple[str, ...]:
    """Tag names from the link up: links of one list share it (classes vary: odd/even, ids)."""
    tags = [anchor.tag]
    for ancestor in anchor.iterancestors():
        if ancestor.tag in ("body", "html") or len(tags) > MAX_CLIMB:
            break
        tags.append(ancestor.tag)
    return tuple(tags)


def _links(page: Any, url: str) -> list[tuple[str, Any]]:
    """(absolute URL, anchor) for every link that could be an article on this listing."""
    listing_path = urlsplit(url).path or "/"
    selector = page if isinstance(page, Selector) else page.selector
    base = link_base(selector, url)
    found = []
    for node in selector.xpath(f"//a[@href][not({FURNITURE})]"):
        href = (node.root.get("href") or "").strip()
        if not href or href.startswith(("#", "javascript:", "mailto:", "tel:")):
            continue
        link = site_link(href, base, url)
        if link is None:
            continue
        link = link.split("#", 1)[0]
        if is_pagination_url(link) or is_non_article_url(link):
            continue
        if _is_section_index(urlsplit(link).path or "/", listing_path):
            continue
        found.append((link, node.root))
    paths = {urlsplit(link).path.rstrip("/") + "/" for link, _ in found}
    # A folder that other candidates live in is a section index, not an article.
    return [
        (link, anchor)
        for link, anchor in found
        if not any(
            other != p and other.startswith(p)
            for p in [urlsplit(link).path.rstrip("/") + "/"]
            for other in paths
        )
    ]


def _containers(members: list[tuple[str, Any]]) -> dict[int, Any]:
    """For each member link, the largest ancestor that holds no other URL of its group."""
    urls_under: dict[Any, set[str]] = defaultdict(set)
    for link, anchor in members:
        for depth, ancestor in enumerate(anchor.iterancestors()):
            if depth >= MAX_CLIMB or ancestor.tag in ("body", "html"):
                break
            urls_under[ancestor].add(link)
    containers = {}
    for index, (link, anchor) in enumerate(members):
        container = anchor
        for ancestor in anchor.iterancestors():
            if ancestor not in urls_under or urls_under[ancestor] != {link}:
                break
            container = ancestor
        containers[index] = container
    return containers


def _entry_date(container: Any, anchor: Any) -> str | None:
    for element in (container, anchor):
        for time in element.iter("time"):
            value = time.get("datetime") or _text(time)
            if value and find_date(value):
                return value.strip()
    text = _text(container)
    return find_date(text) if len(text) <= 1500 else find_date(_text(anchor))


def _entry_title(anchor: Any, container: Any) -> str | None:
    text = _text(anchor)
    if len(text.split()) >= 3 and not find_date(text):
        return text
    for heading in container.iter(*HEADINGS):
        heading_text = _text(heading)
        if heading_text:
            return heading_text
    for image in anchor.iter("img"):
        alt = normalize_whitespace(image.get("alt") or image.get("title"))
        if alt:
            return alt
    return text or None


def _entry_summary(container: Any, title: str | None) -> str | None:
    for paragraph in container.iter("p"):
        text = _text(paragraph)
        if len(text.split()) >= 5 and text != title and not paragraph.xpath(".//a[@href]"):
            return text
    return None


def _in_heading(anchor: Any) -> bool:
    return any(a.tag in HEADINGS for _, a in zip(range(3), anchor.iterancestors(), strict=False))


def _group_score(members: list[tuple[str, Any]], url: str) -> float:
    distinct = {link for link, _ in members}
    if len(distinct) < 2:
        return 0.0
    containers = _containers(members)
    listing_dir = _directory(urlsplit(url).path or "/")
    n = len(members)
    titled = dated = headed = in_article = under = 0
    for index, (link, anchor) in enumerate(members):
        text = _text(anchor)
        titled += len(text.split()) >= 3 and not find_date(text)
        dated += _entry_date(containers[index], anchor) is not None
        headed += _in_heading(anchor)
        in_article += anchor.xpath("boolean(ancestor::article)")
        under += urlsplit(link).path.startswith(listing_dir)
    quality = (titled + dated + 0.5 * (headed + in_article + under)) / n
    return len(distinct) * (0.5 + quality) if titled else 0.0


def detect_candidates(page: Any, url: str) -> list[Candidate]:
    """The entries of a listing page, in page order, with their anchors and containers."""
    groups: dict[tuple[str, ...], list[tuple[str, Any]]] = defaultdict(list)
    links = _links(page, url)
    for link, anchor in links:
        groups[_signature(anchor)].append((link, anchor))
    scored = [(_group_score(members, url), sig) for sig, members in groups.items()]
    scored = [(score, sig) for score, sig in scored if score > 0]
    if not scored:
        return []
    _, best = max(scored)
    members = list(groups[best])
    members += _same_shape_extras(groups, best, members)
    order = {id(anchor): i for i, (_, anchor) in enumerate(links)}
    members.sort(key=lambda member: order.get(id(member[1]), 0))
    containers = _containers(members)
    candidates = []
    for index, (link, anchor) in enumerate(members):
        container = containers[index]
        title = _entry_title(anchor, container)
        entry = Entry(
            url=link,
            title=title,
            date=_entry_date(container, anchor),
            summary=_entry_summary(container, title),
        )
        candidates.append(Candidate(entry, anchor, container))
    return _dedupe(candidates)


def _same_shape_extras(
    groups: dict[tuple[str, ...], list[tuple[str, Any]]],
    best: tuple[str, ...],
    members: list[tuple[str, Any]],
) -> list[tuple[str, Any]]:
    """Title links elsewhere in the main content whose URLs look like the chosen entries'
    (a featured story above the list, a second column)."""
    shapes = [url_shape(link) for link, _ in members]
    shape = max(set(shapes), key=shapes.count)
    if shapes.count(shape) < 0.8 * len(shapes) or shape.count("/") < 3:
        return []
    known = {link for link, _ in members}
    extras = []
    for sig, others in groups.items():
        if sig == best:
            continue
        for link, anchor in others:
            text = _text(anchor)
            if link in known or url_shape(link) != shape or len(text.split()) < 4:
                continue
            if find_date(text) is None:
                extras.append((link, anchor))
                known.add(link)
    return extras


def _dedupe(candidates: list[Candidate]) -> list[Candidate]:
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        current = best.get(candidate.entry.url)
        if current is None or (not current.entry.title and candidate.entry.title):
            best[candidate.entry.url] = candidate
    return list(best.values())


def detect_entries(page: Any, url: str) -> list[Entry]:
    return [candidate.entry for candidate in detect_candidates(page, url)]


def next_page(page: Any, url: str) -> str | None:
    """A next / older link by its label, then the following page number's link."""
    selector = page if isinstance(page, Selector) else page.selector
    base = link_base(selector, url)
    for node in selector.xpath("//a[@href]"):
        label = normalize_whitespace(" ".join(node.xpath(".//text()").getall()))
        label = label.strip(" .:…›»→>").lower() or label.strip().lower()
        title = (node.root.get("title") or node.root.get("aria-label") or "").strip().lower()
        if label in NEXT_LABELS or title in ("next", "next page", "следующая страница"):
            link = site_link(node.root.get("href", ""), base, url)
            if link is not None and link != url:
                return link
    return numbered_next_page(selector, url)


def _page_number(url: str) -> tuple[str, int] | None:
    """(style, number) of a paginated URL: ("PAGEN_1", 3), ("page", 0), ("/page/", 2)."""
    parts = urlsplit(url)
    if match := PAGE_SEGMENT.search(parts.path):
        return "/page/", int(match[1])
    for key, value in parse_qsl(parts.query):
        if PAGE_PARAM.match(key) and value.isdigit():
            return key, int(value)
    return None


def _without_page(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = PAGE_SEGMENT.sub("/", parts.path)
    query = "&".join(
        f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not PAGE_PARAM.match(k)
    )
    return path.rstrip("/"), query


def numbered_next_page(page: Any, url: str) -> str | None:
    """The link to the page numbered one above this one (PAGEN_1=N, page=N, /page/N/)."""
    selector = page if isinstance(page, Selector) else page.selector
    current = _page_number(url)
    unpaged = _without_page(url)
    base = link_base(selector, url)
    numbered: list[tuple[int, str]] = []
    for href in selector.xpath("//a/@href").getall():
        link = site_link(href, base, url)  # http(s), on this site
        if link is None:
            continue
        link = link.split("#", 1)[0]
        found = _page_number(link)
        if not found or _without_page(link) != unpaged:
            continue
        if current and found[0] != current[0]:
            continue
        numbered.append((found[1], link))
    if current:
        later = [(n, link) for n, link in numbered if n > current[1]]
    else:  # page one: "page=1" may be Drupal's second page, "PAGEN_1=1" is this one
        later = [(n, link) for n, link in numbered if n > 1 or (n == 1 and "PAGEN" not in link)]
        later = [(n, link) for n, link in later if not (n == 1 and "/page/1" in link)]
    return min(later)[1] if later else None


# -- article pages ---------------------------------------------------------------------------------

TITLE_SEPARATORS = (" | ", " – ", " — ", " - ", " :: ", " « ", " » ", " · ")


def _meta(selector: Selector, *names: str) -> str | None:
    for name in names:
        value = selector.xpath(f"//meta[@property='{name}' or @name='{name}']/@content").get()
        if value and value.strip():
            return normalize_whitespace(value)
    return None


def strip_site_name(title: str, site_name: str | None = None) -> str:
    """'Story – Site' -> 'Story' (the named site first, else the last separator's tail)."""
    if site_name:
        for separator in TITLE_SEPARATORS:
            if title.endswith(separator + site_name):
                return title[: -len(separator + site_name)].strip()
            if title.startswith(site_name + separator):
                return title[len(site_name + separator) :].strip()
    for separator in TITLE_SEPARATORS:
        if separator in title:
            head, tail = title.rsplit(separator, 1)
            if len(tail.split()) <= 5 and len(head) > len(tail):
                return head.strip()
    return title


def article_title(page: Any) -> str | None:
    """The `<h1>` that the page's own title names; else og:title / `<title>` without the site."""
    selector = page if isinstance(page, Selector) else page.selector
    og_title = _meta(selector, "og:title", "twitter:title")
    page_title = normalize_whitespace(" ".join(selector.xpath("//title//text()").getall()))
    site_name = _meta(selector, "og:site_name")
    headings = [
        normalize_whitespace(" ".join(h.xpath(".//text()").getall()))
        for h in selector.xpath("//h1")
    ]
    named = [h for h in headings if h and any(h in t for t in (og_title, page_title) if t)]
    if named:
        return max(named, key=len)
    if og_title:
        return strip_site_name(og_title, site_name)
    headings = [h for h in headings if h and h != site_name]
    if headings:
        return headings[0]
    return strip_site_name(page_title, site_name) if page_title else None


def article_date(page: Any, title: str | None = None) -> str | None:
    """Last resort after the project's own rules: trafilatura's (htmldate's) publication date."""
    html = _html_of(page)
    return _trafilatura(html, _url_of(page))[1].get("date") if len(html) > 64 else None


def scoped_time(page: Any) -> str | None:
    """A `<time datetime>` inside the article (its `<article>` or the title's surroundings)."""
    selector = page if isinstance(page, Selector) else page.selector
    for heading in selector.xpath("//h1")[:1]:
        near = [a for a in heading.xpath("ancestor::*")[::-1] if a.root.tag not in ("body", "html")]
        for scope in heading.xpath("ancestor::article[1]") + near[:3]:
            for value in scope.xpath(".//time/@datetime").getall():
                if find_date(value):
                    return value.strip()
    return None


def main_text_html(page: Any, title: str | None = None) -> str | None:
    """The article's main text as simple HTML, from trafilatura (comments left out).

    Tidied for an archive: a heading repeating the title, a date line at the top and "Latest
    news" headings whose links trafilatura already dropped are removed. When trafilatura keeps
    much less plain (non-link) text than the site's one content container holds, it probably
    missed part of the article, and the container is used instead.
    """
    html, url = _html_of(page), _url_of(page)
    extracted = _trafilatura(html, url)[0] if len(html) > 64 else None
    container = _content_container(page)
    if not extracted:
        return container
    if title is None:
        title = article_title(page)
    extracted = _with_lead(_tidy(extracted, title, _link_texts(page)), page)
    if container is not None:
        theirs = len(_word_list(clean_text(extracted)))
        if _plain_words(container) > 1.5 * max(theirs, 1):
            return container
    return extracted


CONTAINER_CANDIDATES = (
    "[itemprop='articleBody']",
    ".entry-content",
    ".post-content",
    ".article-body",
    ".article__body",
    ".article-text",
    ".news-detail-text",
    ".field-body",
    ".story__body",
)


LEAD_CANDIDATES = (
    ".lead",
    ".article-lead",
    ".article__lead",
    ".field-lead",
    ".news-lead",
    ".intro",
)


def _with_lead(html: str, page: Any) -> str:
    """Put back a lead paragraph that sits outside the body block and that trafilatura left out."""
    selector = page if isinstance(page, Selector) else page.selector
    for expression in LEAD_CANDIDATES:
        nodes = selector.css(expression)
        if len(nodes) != 1:
            continue
        lead = normalize_whitespace(" ".join(nodes.xpath(".//text()").getall()))
        if len(lead.split()) >= 5 and lead not in normalize_whitespace(clean_text(html)):
            return html.replace("<body>", f"<body><p>{escape(lead)}</p>", 1)
        return html
    return html


def _content_container(page: Any) -> str | None:
    selector = page if isinstance(page, Selector) else page.selector
    for expression in CONTAINER_CANDIDATES:
        nodes = selector.css(expression)
        if len(nodes) == 1:
            return nodes.get()
    return None


def _word_list(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _plain_words(html: str) -> int:
    """Words of an HTML fragment outside links (link lists are boilerplate, not article)."""
    tree = etree.fromstring(html, etree.HTMLParser())
    if tree is None:
        return 0
    for anchor in list(tree.iter("a")):
        anchor.text = None
        for child in list(anchor):
            anchor.remove(child)
    return len(_word_list(clean_text(etree.tostring(tree, encoding="unicode", method="html"))))


def _link_texts(page: Any) -> set[str]:
    selector = page if isinstance(page, Selector) else page.selector
    texts = (
        normalize_whitespace(" ".join(a.xpath(".//text()").getall())) for a in selector.css("a")
    )
    return {text for text in texts if text}


def _tidy(html: str, title: str | None, link_texts: set[str]) -> str:
    tree = etree.fromstring(html, etree.HTMLParser())
    if tree is None:
        return html
    blocks = [element for element in tree.iter() if element.getparent() is not None]
    for element in list(tree.iter(*HEADINGS)):
        text = normalize_whitespace("".join(element.itertext()))
        following = element.getnext()
        if text.strip(" :").casefold() in TEASER_HEADINGS and (
            following is None or following.tag in HEADINGS
        ):
            _remove(element)
    for element in list(tree.iter(*HEADINGS)):
        if title and normalize_whitespace("".join(element.itertext())) == title:
            _remove(element)
            break
    paragraphs = [b for b in blocks if b.tag in ("p", "li") and "".join(b.itertext()).strip()]
    for run in (paragraphs, paragraphs[::-1]):  # menus leak in at the edges
        for element in run:
            if normalize_whitespace("".join(element.itertext())) not in link_texts:
                break
            _remove(element)  # a paragraph that is one whole link on the page is navigation
    for element in [b for b in blocks if b.tag in ("p", "div", "span")][:3]:
        text = normalize_whitespace("".join(element.itertext()))
        if text and len(text.split()) <= 6 and find_date(text) and element.getparent() is not None:
            _remove(element)
    return etree.tostring(tree, encoding="unicode", method="html")


def _remove(element: Any) -> None:
    parent = element.getparent()
    if parent is not None:
        parent.remove(element)


def _html_of(page: Any) -> str:
    text = getattr(page, "text", None)
    return text if isinstance(text, str) else page.get()


def _url_of(page: Any) -> str | None:
    return getattr(page, "url", None)


@lru_cache(maxsize=16)
def _trafilatura(html: str, url: str | None) -> tuple[str | None, dict[str, Any]]:
    """(main text as HTML, metadata dict) of a page, computed once per page."""
    import trafilatura
    from trafilatura.metadata import extract_metadata

    try:
        body = trafilatura.extract(
            html,
            url=url,
            output_format="html",
            include_comments=False,
            include_tables=True,
        )
    except Exception:  # trafilatura raises on odd markup; the caller falls back to its own rules
        logging.getLogger(__name__).debug("trafilatura failed on %s", url, exc_info=True)
        body = None
    try:
        meta = extract_metadata(
            html,
            default_url=url,
            date_config={"extensive_search": False, "original_date": True},
        )
        metadata = {"date": meta.date, "title": meta.title, "pagetype": meta.pagetype}
    except Exception:
        metadata = {}
    return body, metadata
