"""`newsmon add-source`: probe a news section and write a ready `[[sources]]` block.

The probe fetches the start page and one article (monitor/doctor.py), lets automatic mode find
the entries and the article's fields, then looks for stable CSS selectors that reproduce what
it found: the repeated entry container's class, the link, title and date inside it, the next
page link, the article's `<h1>`, date and body block. A selector is kept only if, run on the
page, it gives the same values; where none does, the key is left out and automatic extraction
does the job. The block is appended to the config file: nothing already in it is changed.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsel import Selector
from scrapy.http import HtmlResponse

from monitor.config import CSTO_SELECTORS, DEFAULT_SOURCES, ConfigError, Selectors, load_config
from scraper import auto
from scraper.extract import absolute_link, extract_article, link_base, select, text_of
from storage.normalize import clean_text, find_date, normalize_whitespace

LISTING_KEYS = ("item", "link", "title", "date", "summary", "next_page")
ARTICLE_KEYS = ("article_title", "article_date", "article_body")
_STABLE_CLASS = re.compile(r"^[A-Za-z][\w-]*$")
_STATE_CLASSES = {"active", "current", "first", "last", "odd", "even", "selected", "clearfix"}


class ProbeError(Exception):
    """The URL cannot be made into a source (not reachable, no entries); one line for the user."""


class DuplicateSource(ProbeError):
    """A source with that name is configured already."""


@dataclass
class ProbeResult:
    name: str
    url: str
    selectors: dict[str, str] = field(default_factory=dict)
    feed_url: str | None = None
    language: str | None = None
    entries: int = 0

    def block(self) -> str:
        return source_block(self)


# -- selectors -------------------------------------------------------------------------------------


def _classes(element: Any) -> list[str]:
    return [
        name
        for name in (element.get("class") or "").split()
        if _STABLE_CLASS.match(name) and not re.search(r"\d", name) and name not in _STATE_CLASSES
    ]


def _css(element: Any) -> list[str]:
    """Candidate CSS for one element, most specific first: tag.class for each class, then tag."""
    tag = element.tag
    return [f"{tag}.{name}" for name in _classes(element)] + [tag]


def _root_selector(page: Any) -> Selector:
    return page if isinstance(page, Selector) else page.selector


def suggest_listing(page: Any, url: str) -> dict[str, str]:
    """Selectors reproducing automatic mode's entries on this listing page (those that do)."""
    candidates = auto.detect_candidates(page, url)
    if len(candidates) < 2:
        return {}
    selector = _root_selector(page)
    suggested: dict[str, str] = {}
    item = _item_selector(selector, candidates)
    if item is None:
        return {}
    suggested["item"] = item
    containers = select(selector, item)
    inner = _inner_selectors(containers, candidates, url)
    suggested.update(inner)
    next_url = auto.next_page(page, url)
    if next_url:
        next_selector = _next_selector(selector, url, next_url)
        if next_selector:
            suggested["next_page"] = next_selector
    return suggested


def _item_selector(selector: Selector, candidates: list[auto.Candidate]) -> str | None:
    containers = [c.container for c in candidates]
    first = containers[0]
    options = [css for css in _css(first) if all(css in _css(c) for c in containers)]
    parent = first.getparent()
    if parent is not None and all(c.getparent() is parent for c in containers):
        options += [f"{p} > {first.tag}" for p in _css(parent)[:-1]]
    wanted = {id(c) for c in containers}
    for css in options:
        matched = [node.root for node in selector.css(css)]
        if wanted <= {id(node) for node in matched} and len(matched) <= len(containers) + 1:
            return css
    return None


def _inner_selectors(containers: Any, candidates: list[auto.Candidate], url: str) -> dict[str, str]:
    found: dict[str, str] = {}
    anchor = candidates[0].anchor
    link_options = [f"{css}::attr(href)" for css in _css(anchor)[:-1]]
    heading = next((a for a in anchor.iterancestors() if a.tag in auto.HEADINGS), None)
    if heading is not None:
        link_options += [f"{css} a::attr(href)" for css in _css(heading)]
    link_options.append("a::attr(href)")
    urls = [c.entry.url for c in candidates]
    base = link_base(anchor, url)  # as automatic detection resolved the links
    for option in link_options:
        got = [_absolute(select(node, option).get(), base, url) for node in containers]
        if _agree(got, urls):
            found["link"] = option
            break
    if "link" in found:
        title_option = found["link"].replace("::attr(href)", "::text")
        titles = [c.entry.title for c in candidates]
        got = [text_of(select(node, title_option)) for node in containers]
        if _agree(got, titles):
            found["title"] = title_option
    date = _date_selector(containers, candidates)
    if date:
        found["date"] = date
    summary = _summary_selector(containers, candidates)
    if summary:
        found["summary"] = summary
    return found


def _date_selector(containers: Any, candidates: list[auto.Candidate]) -> str | None:
    dates = [find_date(c.entry.date) if c.entry.date else None for c in candidates]
    if not any(dates):
        return None
    container = candidates[0].container
    options = []
    for time in container.iter("time"):
        options += [f"{css}::attr(datetime)" for css in _css(time)]
    for element in container.iter():
        own = normalize_whitespace(" ".join(element.itertext()))
        if element.tag != "time" and find_date(own) and len(own) < 80 and _classes(element):
            options += [f"{css}::text" for css in _css(element)[:-1]]
    for option in options:
        got = [find_date(text_of(select(node, option)) or "") for node in containers]
        if _agree(got, dates):
            return option
    return None


def _summary_selector(containers: Any, candidates: list[auto.Candidate]) -> str | None:
    summaries = [c.entry.summary for c in candidates]
    if not all(summaries):
        return None
    for paragraph in candidates[0].container.iter("p"):
        options = [css for css in _css(paragraph)[:-1]]
        parent = paragraph.getparent()
        if parent is not None:
            options += [f"{css} p" for css in _css(parent)[:-1]]
        for option in options:
            got = [text_of(select(node, option)[:1]) for node in containers]
            if _agree(got, summaries):
                return option
    return None


def _next_selector(selector: Selector, url: str, next_url: str) -> str | None:
    """The next link's own class, rel=next, or a pager cell named next / older / previous."""
    own, around = [], []
    base = link_base(selector, url)
    for node in selector.xpath("//a[@href]"):
        if _absolute(node.root.get("href"), base, url) != next_url:
            continue
        own += [f"{css}::attr(href)" for css in _css(node.root)[:-1]]
        parent = node.root.getparent()
        if parent is not None and re.search(r"next|older|prev", parent.get("class") or ""):
            around += [f"{css} a::attr(href)" for css in _css(parent)[:-1]]
    options = [*own, "a[rel~=next]::attr(href)", "link[rel~=next]::attr(href)", *around]
    for option in options:
        if _absolute(select(selector, option).get(), base, url) == next_url:
            return option
    return None


def suggest_article(page: Any, url: str) -> dict[str, str]:
    """Selectors reproducing automatic mode's title, date and body on this article page."""
    selector = _root_selector(page)
    fields = extract_article(page, url, Selectors())
    found: dict[str, str] = {}
    if fields.title:
        for h1 in selector.xpath("//h1"):
            if normalize_whitespace(" ".join(h1.xpath(".//text()").getall())) == fields.title:
                for css in _css(h1.root):
                    if (
                        text_of(selector.css(css)[:1]) == fields.title
                        and len(selector.css(css)) == 1
                    ):
                        found["article_title"] = f"{css}::text"
                        break
                break
    if fields.date and find_date(fields.date):
        date = _article_date_selector(selector, find_date(fields.date))
        if date:
            found["article_date"] = date
    if fields.body_html:
        body = _body_selector(selector, clean_text(fields.body_html))
        if body:
            found["article_body"] = body
    return found


def _article_date_selector(selector: Selector, date: str) -> str | None:
    options = [
        "meta[property='article:published_time']::attr(content)",
        "time.published::attr(datetime)",
        "time.entry-date::attr(datetime)",
    ]
    for time in selector.xpath("//time[@datetime]"):
        options += [f"{css}::attr(datetime)" for css in _css(time.root)]
    for node in selector.xpath("//body//*[not(self::script)][not(*)]"):
        text = normalize_whitespace(" ".join(node.xpath(".//text()").getall()))
        if len(text) < 80 and find_date(text) == date:
            options += [f"{css}::text" for css in _css(node.root)[:-1]]
    for option in options:
        value = text_of(select(selector, option)[:1])
        if value and find_date(value) == date and len(select(selector, option)) == 1:
            return option
    return None


def _body_selector(selector: Selector, body: str) -> str | None:
    """The classed block whose text is closest to the extracted body (F1 of their words)."""
    truth = set(re.findall(r"\w+", body.lower()))
    if not truth:
        return None
    best, best_score = None, 0.0
    for node in selector.xpath("//body//*[@class][self::div or self::section or self::article]"):
        for css in _css(node.root)[:-1]:
            if len(selector.css(css)) != 1:
                continue
            words = set(re.findall(r"\w+", clean_text(node.get()).lower()))
            common = len(words & truth)
            if not common:
                continue
            precision, recall = common / len(words), common / len(truth)
            score = 2 * precision * recall / (precision + recall)
            if score > best_score:
                best, best_score = css, score
            break
    return best if best_score >= 0.9 else None


def _absolute(href: str | None, base: str, url: str) -> str | None:
    link = absolute_link(href, base, url) if href else None
    return link.split("#", 1)[0] if link else None


def _agree(got: list[Any], wanted: list[Any]) -> bool:
    """At least 90% of the entries give exactly the automatic value."""
    pairs = [(g, w) for g, w in zip(got, wanted, strict=False) if w]
    if not pairs:
        return False
    return sum(g == w for g, w in pairs) >= 0.9 * len(pairs)


# -- the [[sources]] block -------------------------------------------------------------------------


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are all valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def source_block(result: ProbeResult) -> str:
    lines = [
        "",
        "[[sources]]",
        f"name = {_toml(result.name)}",
        f"start_urls = [{_toml(result.url)}]",
    ]
    if result.feed_url:
        lines.append(f"feed_url = {_toml(result.feed_url)}")
    if result.language:
        lines.append(f"language = {_toml(result.language)}")
    if result.selectors:
        lines.append("[sources.selectors]")
        for key in (*LISTING_KEYS, *ARTICLE_KEYS):
            if key in result.selectors:
                lines.append(f"{key} = {_toml(result.selectors[key])}")
    return "\n".join(lines) + "\n"


def existing_names(config_path: Path) -> list[str]:
    """Names of the sources a config file defines (the built-in ones when it does not exist)."""
    if not config_path.exists():
        return [source.name for source in DEFAULT_SOURCES]
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    sources = data.get("sources")
    if sources is None:
        return [source.name for source in DEFAULT_SOURCES]
    return [block.get("name") for block in sources if isinstance(block, dict)]


def append_source(config_path: Path, block: str, name: str) -> None:
    """Append `block` to the config (created if missing), refusing a name already in use.

    The new text is checked as a whole config before anything is written; the existing text is
    kept byte for byte. A config without [[sources]] (a new file too) first gets the built-in
    CSTO sources written out, which its first [[sources]] block would otherwise replace.
    """
    names = existing_names(config_path)
    if name in names:
        raise DuplicateSource(f"{config_path}: a source named {name!r} exists already")
    old = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    addition = block
    if not _has_sources(old):  # the built-in sources stay watched, now written out
        addition = _default_sources() + block
    if not old:
        addition = "# newsmon configuration (see README: Configuration)\n" + addition
    elif not old.endswith("\n"):
        addition = "\n" + addition
    _check(config_path, old + addition)
    with config_path.open("a", encoding="utf-8") as handle:
        handle.write(addition)


def _has_sources(text: str) -> bool:
    return bool(text) and "sources" in tomllib.loads(text)


def _default_sources() -> str:
    lines = []
    for source in DEFAULT_SOURCES:
        lines += ["", "[[sources]]", f"name = {_toml(source.name)}"]
        lines.append(f"start_urls = [{', '.join(_toml(u) for u in source.start_urls)}]")
        lines.append(f"language = {_toml(source.language or 'en')}")
        if source.selectors == CSTO_SELECTORS:
            lines.append("[sources.selectors]")
            lines += [f"{k} = {_toml(v)}" for k, v in source.selectors.configured().items()]
    return "\n".join(lines) + "\n"


def _check(config_path: Path, text: str) -> None:
    """Raise ConfigError unless `text` is a valid config (read from a scratch copy)."""
    scratch = config_path.with_name(f".{config_path.name}.newsmon-check")
    try:
        fd = os.open(scratch, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)  # may hold secrets
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        load_config(scratch)
    finally:
        scratch.unlink(missing_ok=True)


# -- probing ---------------------------------------------------------------------------------------


def probe(url: str, name: str, config: Any, overrides: dict[str, Any] | None = None) -> ProbeResult:
    """Fetch `url` and one of its articles; the source block automatic mode supports there."""
    from monitor.config import SourceConfig
    from monitor.doctor import fetch_pages

    source = SourceConfig(name=name, start_urls=(url,))
    pages = fetch_pages(config, [source], overrides)[name]
    if pages.listing is None:
        raise ProbeError(f"cannot fetch {url}: {pages.error or 'no answer'}")
    if pages.listing.status >= 400 or not isinstance(pages.listing, HtmlResponse):
        kind = pages.listing.headers.get("Content-Type", b"no content type").decode("latin-1")
        raise ProbeError(f"{url} answered HTTP {pages.listing.status} ({kind}), not an HTML page")
    result = ProbeResult(name=name, url=url, language=_language(pages.listing))
    candidates = auto.detect_candidates(pages.listing, pages.listing.url)
    result.entries = len(candidates)
    discovered = pages.feed_url
    if not candidates and not discovered:
        raise ProbeError(f"no article links found on {url} (and no RSS/Atom feed)")
    if not candidates:
        result.feed_url = discovered
        return result
    result.selectors = suggest_listing(pages.listing, pages.listing.url)
    if pages.article is not None and result.selectors:
        result.selectors.update(suggest_article(pages.article, pages.article.url))
    return result


def _language(page: Any) -> str | None:
    lang = _root_selector(page).xpath("/html/@lang").get()
    code = re.split(r"[-_]", lang.strip(), maxsplit=1)[0].lower() if lang else ""
    return code if re.fullmatch(r"[a-z]{2,3}", code) else None
