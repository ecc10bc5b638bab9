"""Local replica of the CSTO news section (Bitrix markup) for tests, the demo and benchmarks.

The live site is unreachable, so this serves a deterministic stand-in: an English site under
``/news/``, a windows-1251 Russian one under ``/ru/news/``, ``?PAGEN_1=N`` pagination, conditional
requests, injectable faults and control endpoints under ``/_replica/``. Articles are derived from
``(seed, id)`` on demand and only publish/edit/delete overrides are stored, so size costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import html
import io
import json
import random
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from email.utils import format_datetime, formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.client import parse_headers
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOSTILE_TITLE = '<script>alert(1)</script> \x1b[31mRED\x1b[0m <a href="javascript:alert(1)">x</a>'
PDF = b"%PDF-1.4\n% newsmon replica attachment\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
# fmt: off
FAULT_KINDS = {"status", "delay", "hold", "truncate", "garbage", "empty", "oversize", "redirect",
               "content_type", "hostile"}
MONTHS = {
    "en": "January February March April May June July August September October November December",
    "ru": "января февраля марта апреля мая июня июля августа сентября октября ноября декабря",
}
LABELS = {
    "en": {"home": "Home", "news": "News", "docs": "Documents", "latest": "Latest news",
           "back": "Go back", "section": "Back to the section", "all": "Back to the all news",
           "share": "Share", "prev": "Previous", "next": "Next",
           "pdf": "Download the statement (PDF)", "missing": "Page not found", "site": "CSTO"},
    "ru": {"home": "Главная", "news": "Новости", "docs": "Документы", "latest": "Последние новости",
           "back": "Назад", "section": "Вернуться в раздел", "all": "Все новости",
           "share": "Поделиться", "prev": "Пред.", "next": "След.",
           "pdf": "Скачать заявление (PDF)", "missing": "Страница не найдена", "site": "ОДКБ"},
}
# Parallel vocabularies: the same random picks give an English article and its Russian twin.
VOCAB: dict[str, dict[str, Any]] = {
    "en": {
        "event": [("Consultations", "were held"), ("A working meeting", "was held"),
                  ("A meeting of the Committee of Secretaries of Security Councils", "was held"),
                  ("Joint staff exercises", "were conducted"), ("Talks", "were held"),
                  ("A session of the Council of Foreign Ministers", "was held")],
        "topic": ["international flights of the armed forces", "countering terrorism",
                  "information security", "peacekeeping activities", "crisis response",
                  "military-economic cooperation", "combating drug trafficking",
                  "border security in Central Asia"],
        "place": ["in Moscow", "in Minsk", "in Astana", "in Bishkek", "in Dushanbe", "in Yerevan",
                  "at the CSTO Secretariat"],
        "who": ["representatives of the CSTO member States", "the CSTO Joint Staff",
                "experts of the ministries of defence"],
        "lead": "On {day}, {event} on {topic} {verb} {place} with the participation of {who}.",
        "entity": "In accordance with Article\xa04 of the Collective Security Treaty, the parties "
                  "approved the draft «On {topic2}» & sent it to the Council of Foreign Ministers.",
        "more": ["Representatives of Armenia, Belarus, Kazakhstan, Kyrgyzstan, Russia and "
                 "Tajikistan took part in the event.",
                 "The participants discussed {topic2} and agreed on further steps to strengthen "
                 "cooperation between the member States.",
                 "Special attention was paid to {topic2} in the context of the current situation.",
                 "The parties agreed to hold the next meeting in {year}."],
    },
    "ru": {
        "event": [("Консультации", "прошли"), ("Рабочая встреча", "состоялась"),
                  ("Заседание Комитета секретарей советов безопасности", "состоялось"),
                  ("Совместные штабные учения", "прошли"), ("Переговоры", "прошли"),
                  ("Сессия Совета министров иностранных дел", "состоялась")],
        "topic": ["международных полетов вооруженных сил", "противодействия терроризму",
                  "информационной безопасности", "миротворческой деятельности",
                  "реагирования на кризисные ситуации", "военно-экономического сотрудничества",
                  "борьбы с наркотрафиком", "безопасности границ в Центральной Азии"],
        "place": ["в Москве", "в Минске", "в Астане", "в Бишкеке", "в Душанбе", "в Ереване",
                  "в Секретариате ОДКБ"],
        "who": ["представителей государств – членов ОДКБ", "Объединенного штаба ОДКБ",
                "экспертов министерств обороны"],
        "lead": "{day} года {place} {verb} {event} по вопросам {topic} с участием {who}.",
        "entity": "В соответствии со статьей\xa04 Договора о коллективной безопасности стороны "
                  "одобрили проект «О вопросах {topic2}» & направили его в Совет министров.",
        "more": ["В мероприятии приняли участие представители Армении, Беларуси, Казахстана, "
                 "Кыргызстана, России и Таджикистана.",
                 "Участники обсудили вопросы {topic2} и согласовали дальнейшие шаги по укреплению "
                 "сотрудничества государств-членов.",
                 "Особое внимание было уделено вопросам {topic2} в контексте текущей ситуации.",
                 "Стороны договорились провести следующую встречу в {year} году."],
    },
}
# fmt: on


@dataclass(frozen=True)
class Article:
    """One news item; `attachment` is a path relative to the replica's mount point."""

    id: int
    slug: str
    title: str
    published: date
    lead: str
    paragraphs: list[str]
    language: str
    attachment: str | None
    deleted: bool = False


def slugify(text: str, article_id: int) -> str:
    """Latin slug ending in the id, so a page is found without a slug index ('news-N' if none)."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ("a", "the")][:5]
    return "-".join([*(words or ["news"]), str(article_id)])


def date_words(day: date, language: str) -> str:
    """'22 April 2024' / '22 апреля 2024', as the site writes dates inside text."""
    return f"{day.day} {MONTHS[language].split()[day.month - 1]} {day.year}"


class FaultPlan:
    """Thread-safe ordered fault rules; the first rule whose path matches a request wins.

    A rule is ``{"path": prefix (or exact path+query with "exact": true), "kind": ..., "times": N}``
    plus per kind: status (code, retry_after), delay (seconds), hold (until the rules are
    cleared: a test releases requests when it is ready for them), truncate (bytes), garbage (bytes,
    seed), empty, oversize (bytes), redirect (location, code), content_type (content_type), hostile
    (every article title on the page becomes HOSTILE_TITLE).
    """

    def __init__(self) -> None:
        self._rules: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cleared = threading.Event()  # set, and replaced, by each clear(): releases holds

    def add(self, rule: dict[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Validate up front so a typo fails loudly instead of silently never matching."""
        rule = {**(rule or {}), **fields}
        if rule.get("kind") not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {rule.get('kind')!r}")
        if not str(rule.get("path", "")).startswith("/"):
            raise ValueError("fault path must start with '/'")
        if rule.get("times") is not None and int(rule["times"]) < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            cleared, self._cleared = self._cleared, threading.Event()
        cleared.set()

    @staticmethod
    def released(rule: dict[str, Any]) -> bool:
        """Whether the rules in force when `rule` matched (a hold) have been cleared since."""
        return rule["_cleared"].is_set()

    @property
    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._rules]

    def match(self, target: str) -> dict[str, Any] | None:
        """Matching rule (a copy) for a path+query, using up one of its `times`."""
        with self._lock:
            for rule in self._rules:
                path = rule["path"]
                if target == path or (not rule.get("exact") and target.startswith(path)):
                    if rule.get("times") is not None:
                        rule["times"] = int(rule["times"]) - 1
                        if rule["times"] <= 0:
                            self._rules.remove(rule)
                    return {**rule, "_cleared": self._cleared}
        return None


class Replica:
    """Thread-safe content store; identical parameters give identical sites."""

    def __init__(
        self,
        articles: int = 30,
        per_page: int = 10,
        language: str = "en",
        pinned: bool = True,
        sphrase_every: int = 5,
        seed: int = 1,
        start: date = date(2024, 4, 22),
        conditional: bool = True,
    ) -> None:
        if language not in VOCAB:
            raise ValueError(f"language must be one of {sorted(VOCAB)}")
        self.initial, self.per_page, self.language = articles, max(1, per_page), language
        self.pinned, self.sphrase_every, self.seed = pinned, sphrase_every, seed
        self.start, self.conditional = start, conditional
        self.faults = FaultPlan()
        self._count = articles
        self._overrides: dict[int, dict[str, Any]] = {}
        self._deleted: set[int] = set()
        self._touched: dict[int, datetime] = {}
        self._requests: list[tuple[str, str, int]] = []
        self._lock = threading.RLock()
        # An article page shows four more (its latest-news block) and a listing page ten: each
        # generated once, not on every page that shows it (most of the replica's CPU otherwise).
        self._generated = functools.lru_cache(maxsize=4096)(self._generate)
        self.changed_at = self._top_changed = datetime.now(UTC).replace(microsecond=0)

    def article(self, article_id: int) -> Article:
        """Generated article with overrides applied; deleted ones come back with deleted=True."""
        with self._lock:
            if not 1 <= article_id <= self._count:
                raise KeyError(article_id)
            over = self._overrides.get(article_id, {})
            base = self._generated(article_id, over.get("published") or self._date_of(article_id))
            return dataclasses.replace(base, **over, deleted=article_id in self._deleted)

    def articles(self) -> list[Article]:
        """Visible articles, newest first (materialises them all: meant for small replicas)."""
        with self._lock:
            return [self.article(i) for i in self._visible_ids(0, self._count)]

    def listing(self, page: int) -> tuple[int, int, list[Article]]:
        """(page, pages, items); clamps like Bitrix: <1 is page 1, past the end the last page."""
        with self._lock:
            pages = max(1, -(-(self._count - len(self._deleted)) // self.per_page))
            page = 1 if page < 1 else min(page, pages)
            ids = self._visible_ids((page - 1) * self.per_page, self.per_page)
            return page, pages, [self.article(i) for i in ids]

    def pinned_article(self) -> Article | None:
        """The oldest visible article, which the site repeats on top of page 1."""
        with self._lock:
            oldest = next((i for i in range(1, self._count + 1) if i not in self._deleted), None)
            return self.article(oldest) if self.pinned and oldest else None

    def latest(self, exclude: int, n: int = 3) -> list[Article]:
        with self._lock:
            return [self.article(i) for i in self._visible_ids(0, n + 1) if i != exclude][:n]

    def find(self, slug: str) -> Article | None:
        """Visible article whose slug matches exactly (its id is the slug's last part)."""
        m = re.fullmatch(r"(?:[a-z0-9-]*-)?(\d+)", slug)
        try:
            found = self.article(int(m[1])) if m else None
        except KeyError:
            return None
        return found if found and not found.deleted and found.slug == slug else None

    def article_modified(self, article_id: int) -> datetime:
        """An article page changes with the article or with its latest-news block."""
        with self._lock:
            return max(self._touched.get(article_id, self._top_changed), self._top_changed)

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self._requests)

    def log_request(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self._requests.append((method, target, status))

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def publish(
        self, title: str | None = None, body: str | None = None, published: date | None = None
    ) -> Article:
        """Add the newest article (highest id), first on page 1 below the pinned item."""
        with self._lock:
            self._count += 1
            over: dict[str, Any] = {"published": published or max(date.today(), self.start)}
            if title is not None:
                over.update(title=title, slug=slugify(title, self._count))
            self._overrides[self._count] = over
            self._change(self._count, top=True, body=body)
            return self.article(self._count)

    def edit(self, article_id: int, title: str | None = None, body: str | None = None) -> Article:
        """Change title and/or body (one paragraph per non-empty line); the slug stays."""
        with self._lock:
            if self.article(article_id).deleted:
                raise KeyError(article_id)
            if title is not None:
                self._overrides.setdefault(article_id, {})["title"] = title
            self._change(article_id, top=article_id in self._visible_ids(0, 4), body=body)
            return self.article(article_id)

    def delete(self, article_id: int) -> None:
        """The page answers 404 and the article leaves the listings; a second delete is a no-op."""
        with self._lock:
            if not self.article(article_id).deleted:
                top = article_id in self._visible_ids(0, 4)
                self._deleted.add(article_id)
                self._change(article_id, top=top)

    def _change(self, article_id: int, top: bool, body: str | None = None) -> None:
        """Record a change; Last-Modified moves by >= 1 s so second-resolution clients see it."""
        if body is not None:
            paragraphs = [line.strip() for line in body.splitlines() if line.strip()] or [""]
            over = self._overrides.setdefault(article_id, {})
            over.update(paragraphs=paragraphs, lead=paragraphs[0])
        now = datetime.now(UTC).replace(microsecond=0)
        self.changed_at = self._touched[article_id] = max(
            now, self.changed_at + timedelta(seconds=1)
        )
        if top:
            self._top_changed = self.changed_at

    def _visible_ids(self, skip: int, limit: int) -> list[int]:
        """Ids newest first without deleted ones, in O(deleted + limit) even for huge replicas."""
        candidate = self._count - skip
        for gone in sorted(self._deleted, reverse=True):
            if gone < candidate:
                break
            candidate -= 1
        ids: list[int] = []
        while candidate >= 1 and len(ids) < limit:
            if candidate not in self._deleted:
                ids.append(candidate)
            candidate -= 1
        return ids

    def _date_of(self, article_id: int) -> date:
        """About one article a day back from `start`, sometimes two on the same day."""
        back, phase = self.initial - article_id, self.seed % 6
        return self.start - timedelta(days=(5 * back + phase) // 6 - phase // 6)

    def _generate(self, aid: int, published: date) -> Article:
        """Same picks for both languages; the slug always comes from the English words."""
        rng, v = random.Random(f"{self.seed}:{aid}"), VOCAB[self.language]
        kinds = ("event", "topic", "place", "who", "topic")
        ev, topic, place, who, topic2 = (rng.randrange(len(v[k])) for k in kinds)
        more = rng.sample(v["more"], rng.randint(1, 3))
        slug = slugify(f"{VOCAB['en']['event'][ev][0]} on {VOCAB['en']['topic'][topic]}", aid)
        event, verb = v["event"][ev]
        about = "по вопросам" if self.language == "ru" else "on"
        title = f"{event} {about} {v['topic'][topic]} {verb} {v['place'][place]}"
        words = {"topic": v["topic"][topic], "place": v["place"][place], "who": v["who"][who]}
        day = date_words(published, self.language)
        lead = v["lead"].format(day=day, event=event[0].lower() + event[1:], verb=verb, **words)
        fill = {"topic2": v["topic"][topic2], "year": published.year + 1}
        paragraphs = [lead, *(p.format(**fill) for p in [v["entity"], *more])]
        attachment = f"/files/statement-{aid}.pdf" if aid % 4 == 0 else None
        return Article(aid, slug, title, published, lead, paragraphs, self.language, attachment)


# -- rendering: replica data in, HTML text out ----------------------------------------------------
def _esc(text: str) -> str:
    """Escape as the CMS does, with named entities for guillemets and no-break spaces."""
    out = html.escape(text)
    return out.replace("«", "&laquo;").replace("»", "&raquo;").replace("\xa0", "&nbsp;")


def _document(lang: str, title: str, main: str, prefix: str, head: str = "") -> str:
    lab = LABELS[lang]
    meta = '<meta charset="utf-8">'
    if lang == "ru":
        meta = '<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head>{meta}<title>{_esc(title)} - {lab["site"]}'
        f'</title>{head}</head><body>\n<header><nav class="top-menu"><a href="{prefix}/">'
        f'{lab["home"]}</a> <a href="{prefix}/news/">{lab["news"]}</a> '
        f'<a href="{prefix}/documents/">{lab["docs"]}</a></nav></header>\n'
        f"<main>{main}</main><footer>© {lab['site']}</footer></body></html>\n"
    )


def _item(rep: Replica, a: Article, prefix: str, pinned: bool = False) -> str:
    """Listing entry; some links carry Bitrix's search-highlight parameter, as on the site."""
    href = f"{prefix}/news/news_odkb/{a.slug}/"
    if rep.sphrase_every > 0 and a.id % rep.sphrase_every == 0:
        href += f"?sphrase_id={(a.id * 7919 + rep.seed) % 90000 + 10000}"
    return (
        f'<div class="news-item{" news-item-pinned" if pinned else ""}">\n'
        f' <span class="news-date">{a.published:%d.%m.%Y}</span>\n'
        f' <a class="news-title" href="{href}">{_esc(a.title)}</a>\n'
        f' <p class="news-preview">{_esc(a.lead)}</p>\n</div>\n'
    )


def _pager(page: int, pages: int, base: str, lab: dict[str, str]) -> str:
    """Bitrix 'modern' navigation: previous/next plus first, last and the current's neighbours."""
    if pages <= 1:
        return ""
    parts, last = [], 0
    if page > 1:
        parts.append(
            f'<a class="modern-page-previous" href="{base}?PAGEN_1={page - 1}">{lab["prev"]}</a>'
        )
    for n in sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)}):
        if n - last > 1:
            parts.append('<span class="modern-page-dots">...</span>')
        current = f'<span class="modern-page-current">{n}</span>'
        parts.append(current if n == page else f'<a href="{base}?PAGEN_1={n}">{n}</a>')
        last = n
    if page < pages:
        parts.append(
            f'<a class="modern-page-next" href="{base}?PAGEN_1={page + 1}">{lab["next"]}</a>'
        )
    return f'<div class="modern-page-navigation">{" ".join(parts)}</div>\n'


def render_listing(
    rep: Replica, page: int, pages: int, items: list[Article], pinned: Article | None, prefix: str
) -> str:
    lab = LABELS[rep.language]
    rows = [_item(rep, pinned, prefix, pinned=True)] if pinned else []
    rows += [_item(rep, a, prefix) for a in items]
    main = f'<h1>{lab["news"]}</h1>\n<div class="news-list">\n{"".join(rows)}</div>\n'
    main += _pager(page, pages, f"{prefix}/news/", lab)
    return _document(rep.language, lab["news"], main, prefix)


def render_article(rep: Replica, a: Article, latest: list[Article], site: str, prefix: str) -> str:
    """Article page shaped like the captured CSTO page (see /work/shared/seeds)."""
    lab, title = LABELS[rep.language], _esc(a.title)
    in_words = rep.language == "ru" and a.id % 3 == 0
    when = date_words(a.published, "ru") if in_words else f"{a.published:%d.%m.%Y}"
    side = "".join(
        f'<div class="latest-news-item"><span class="news-date">{o.published:%d.%m.%Y}</span>'
        f'<a href="{prefix}/news/news_odkb/{o.slug}/">{_esc(o.lead)}</a></div>'
        for o in latest
    )
    text = [f"<p>{_esc(p)}</p>" for p in a.paragraphs]
    if a.id % 7 == 0:
        text.insert(1, '<script>var x = "tracking";</script><style>p{margin:0}</style>')
    files = ""
    if a.attachment:
        files = f'<div class="news-files"><a href="{prefix}{a.attachment}">{lab["pdf"]}</a></div>\n'
    main = (
        f'<div class="latest-news"><h2>{lab["latest"]}</h2>{side}</div>\n'
        f'<div class="news-detail">\n<h1>{title}</h1>\n<h3 class="news-detail-title">{title}</h3> '
        f'<span class="news-date-time">{when}</span>\n'
        f'<div class="news-detail-text">{"".join(text)}</div>\n'
        f'<div class="share-buttons">{lab["share"]}: <a href="https://vk.com/share">VK</a> '
        f'<a href="https://t.me/share">Telegram</a></div>\n{files}</div>\n'
        f'<div class="news-back"><a href="javascript:history.back()">{lab["back"]}</a> '
        f'<a href="{prefix}/news/news_odkb/">{lab["section"]}</a> '
        f'<a href="{prefix}/news/">{lab["all"]}</a></div>\n'
    )
    head = f'<meta property="og:title" content="{title}">'
    head += f'<link rel="canonical" href="{site}/news/news_odkb/{a.slug}/">'
    return _document(rep.language, a.title, main, prefix, head)


@dataclass
class Response:
    """What a route produces; `modified` marks pages that take part in conditional requests."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    modified: datetime | None = None


def route(rep: Replica, prefix: str, target: str, site: str, hostile: bool = False) -> Response:
    """Answer a path+query under the replica's mount `prefix` (no I/O, no faults)."""
    parts = urlsplit(target)
    path = parts.path.removeprefix(prefix) or "/"
    charset = "windows-1251" if rep.language == "ru" else "utf-8"
    spoil = (lambda a: dataclasses.replace(a, title=HOSTILE_TITLE)) if hostile else (lambda a: a)

    def page(text: str, status: int = 200, modified: datetime | None = None) -> Response:
        body = text.encode(charset, "xmlcharrefreplace")
        return Response(status, body, f"text/html; charset={charset}", modified=modified)

    if path in ("/news/", "/news/news_odkb/"):
        modified = rep.changed_at  # read first: a racing change can only make the page look newer
        wanted = parse_qs(parts.query).get("PAGEN_1", ["1"])[0]
        number, pages, items = rep.listing(int(wanted) if wanted.lstrip("-").isdigit() else 1)
        pinned = rep.pinned_article() if number == 1 else None
        items, pinned = [spoil(a) for a in items], pinned and spoil(pinned)
        return page(render_listing(rep, number, pages, items, pinned, prefix), modified=modified)
    m = re.fullmatch(r"/news/news_odkb/([a-z0-9-]+)/", path)
    if m and (found := rep.find(m[1])):
        modified, latest = rep.article_modified(found.id), rep.latest(found.id)
        return page(render_article(rep, spoil(found), latest, site, prefix), modified=modified)
    if re.fullmatch(r"/files/[\w.-]+\.pdf", path):
        return Response(200, PDF, "application/pdf")
    if path == "/robots.txt" and not prefix:
        return Response(200, b"User-agent: *\nDisallow: /search/\n", "text/plain; charset=utf-8")
    if path == "/":
        links = '<a href="/news/">News</a> <a href="/ru/news/">Новости</a>'
        return page(_document(rep.language, LABELS[rep.language]["home"], links, prefix))
    missing = LABELS[rep.language]["missing"]
    return page(_document(rep.language, missing, f"<h1>{missing}</h1>", prefix), 404)


def validate(resp: Response, if_none_match: str | None, if_modified_since: str | None) -> None:
    """Add ETag/Last-Modified to a 200 page; make it a 304 if the client's copy is current.

    RFC 9110 order: If-None-Match decides when present, otherwise If-Modified-Since.
    """
    if resp.modified is None or resp.status != 200:
        return
    etag = '"' + hashlib.sha1(resp.body).hexdigest()[:20] + '"'
    resp.headers.update({"ETag": etag, "Last-Modified": format_datetime(resp.modified, True)})
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        current = "*" in tags or etag in tags
    else:
        try:
            since = parsedate_to_datetime(if_modified_since or "")
        except (TypeError, ValueError):
            return
        current = (since if since.tzinfo else since.replace(tzinfo=UTC)) >= resp.modified
    if current:
        resp.status, resp.body = 304, b""


# -- HTTP server ---------------------------------------------------------------------------------
STOP_GRACE = 0.5  # seconds stop() waits for answers under way before it cuts them off
MAX_HEAD = 64 * 1024  # a request line and headers longer than this answer 431
# socketserver's backlog of 5 drops handshakes when a crawler opens 16-64 connections at once,
# and every dropped one costs the client a 1 s SYN retransmit.
BACKLOG = 128


class _Exchange:
    """One HTTP/1.0 request and its answer: control commands, then faults, then the route.

    HTTP/1.0 (one request per connection) so a stopped server really stops answering.
    """

    def __init__(
        self,
        owner: ReplicaServer,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: Message,
    ) -> None:
        self.owner, self.writer = owner, writer
        self.method, self.target, self.headers = method, target, headers
        self.logbook: Replica | None = None  # the replica whose request log this request goes to

    async def answer(self, body: bytes) -> None:
        if urlsplit(self.target).path.startswith("/_replica/"):
            status, data = self.owner.control(self.method, self.target, body)
            payload = json.dumps(data, ensure_ascii=False).encode()
            self.send(Response(status, payload, "application/json"))
            return
        self.logbook, prefix = self.owner.resolve(self.target)
        await self.serve(self.logbook, prefix)

    async def serve(self, rep: Replica, prefix: str) -> None:
        rule = rep.faults.match(self.target) or {}
        kind = rule.get("kind")
        stopping = self.owner.stopping
        if kind == "delay":  # stop() ends the wait, and the request is answered
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), float(rule.get("seconds", 1)))
        if kind == "hold":
            while not (rep.faults.released(rule) or stopping.is_set()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.05)
        if kind in ("status", "redirect", "garbage", "empty", "oversize"):
            await self.fault(kind, rule)
            return
        if self.method not in ("GET", "HEAD"):
            self.send(Response(405, headers={"Allow": "GET, HEAD"}))
            return
        site = self.owner.base_url + prefix
        resp = route(rep, prefix, self.target, site, hostile=kind == "hostile")
        if rep.conditional:
            validate(resp, self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since"))
        if kind == "content_type":
            resp.content_type = str(rule.get("content_type", "application/octet-stream"))
        if kind == "truncate":  # promise the full length, send a prefix, hang up
            self.head(resp, len(resp.body))
            self.body(resp.body[: int(rule.get("bytes", len(resp.body) // 2))])
        else:
            self.send(resp)

    async def fault(self, kind: str, rule: dict[str, Any]) -> None:
        if kind == "status":
            code, retry = int(rule.get("code", 503)), rule.get("retry_after")
            headers = {"Retry-After": str(retry)} if retry is not None else {}
            body = f"<html><body><h1>{code}</h1></body></html>".encode()
            self.send(Response(code, body, headers=headers))
        elif kind == "redirect":
            location = str(rule.get("location", "http://example.invalid/"))
            self.send(Response(int(rule.get("code", 302)), headers={"Location": location}))
        elif kind == "garbage":
            # Seeded, so a test sees the same garbage every run: fresh random bytes now and then
            # decode to something a fallback reads as text (a test failed once that way).
            noise = random.Random(rule.get("seed", 0)).randbytes(int(rule.get("bytes", 2048)))
            self.send(Response(200, noise))
        elif kind == "empty":
            self.send(Response(200))
        else:
            await self.stream_filler(int(rule.get("bytes", 10_000_000)))

    async def stream_filler(self, size: int) -> None:
        """Oversize body written in 64 KiB chunks, so a huge `bytes` never sits in memory."""
        self.head(Response(200), size)
        head, chunk = b"<!DOCTYPE html><html><body>"[:size], b"<p>" + b"filler " * 9362 + b"</p>\n"
        self.body(head)
        sent = len(head) if self.method != "HEAD" else size
        while sent < size and not self.owner.stopping.is_set():
            piece = chunk[: size - sent]
            self.body(piece)
            sent += len(piece)
            await self.writer.drain()

    def head(self, resp: Response, length: int) -> None:
        """Logs before the client can see the answer, so tests may read the log right after."""
        if self.logbook is not None:
            self.logbook.log_request(self.method, self.target, resp.status)
        lines = [_status_line(resp.status), "Server: nginx", f"Date: {formatdate(usegmt=True)}"]
        if resp.status != 304:
            lines += [f"Content-Type: {resp.content_type}", f"Content-Length: {length}"]
        lines += [f"{name}: {value}" for name, value in resp.headers.items()]
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, resp: Response) -> None:
        self.head(resp, len(resp.body))
        self.body(resp.body)

    def body(self, data: bytes) -> None:
        """A HEAD request gets the headers a GET would, and no body."""
        if self.method != "HEAD":
            self.write(data)

    def write(self, data: bytes) -> None:
        self.owner.bytes_sent += len(data)
        self.writer.write(data)


def _status_line(status: int) -> str:
    try:
        return f"HTTP/1.0 {status} {HTTPStatus(status).phrase}"
    except ValueError:  # a fault's made-up code
        return f"HTTP/1.0 {status} "


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, Message, bytes] | int:
    """(method, target, headers, body), or the status that answers a malformed request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return 431
    request_line, _, rest = head.partition(b"\r\n")
    words = request_line.decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        return 400
    headers = parse_headers(io.BytesIO(rest))
    length = headers.get("Content-Length") or "0"
    if not length.isdigit():
        return 400
    body = await reader.readexactly(int(length)) if int(length) else b""
    return words[0], words[1], headers, body


class ReplicaServer:
    """English replica under /news/, Russian under /ru/news/, benchmark sections /s/<k>/news/."""

    def __init__(
        self,
        replica_en: Replica | None = None,
        replica_ru: Replica | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_sections: int = 0,
    ) -> None:
        self.replica_en = replica_en or Replica()
        self.replica_ru = replica_ru or Replica(language="ru")
        self.host, self.port, self.extra_sections = host, port, extra_sections
        self._sections: dict[int, Replica] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_error: Exception | None = None
        self.stopping = asyncio.Event()  # the loop's own, made when it starts
        self.in_flight = 0  # requests being read or answered
        self.bytes_sent = 0  # every byte of every answer (status line, headers, body)

    def start(self) -> ReplicaServer:
        """Listen (an OSError here if the port is taken), then answer on a thread of its own.

        One event loop on one thread, not a thread per connection: a crawl opens 16-64 at once,
        and as many runnable threads took the cores from the crawl a benchmark measures (its
        process was preempted ~1,000 times a 2,000-article backfill; 120-580 with one thread).
        http.server has no such mode, hence the small parser in _read_request.
        """
        if self._loop is None:
            sock = socket.create_server((self.host, self.port), backlog=BACKLOG)
            self.port = sock.getsockname()[1]
            self._loop = loop = asyncio.new_event_loop()
            listening = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(loop, sock, listening))
            self._thread.daemon = True
            self._thread.start()
            listening.wait()
            if self._start_error is not None:
                self._loop, error, self._start_error = None, self._start_error, None
                raise error
        return self

    def _run(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, listening: threading.Event
    ) -> None:
        """The server's thread (its own loop: the caller's thread may be running another)."""
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._exchange, sock=sock, limit=MAX_HEAD, backlog=BACKLOG)
            )
        except Exception as exc:  # for start() to raise
            self._start_error = exc
            sock.close()
            loop.close()
            listening.set()
            return
        self.stopping = asyncio.Event()
        listening.set()
        try:
            loop.run_forever()
            # No new connections, then let the ones asyncio accepted reach the server before it
            # closes: Python 3.11 fails (and leaks the socket) on one that arrives after.
            for listener in server.sockets:
                loop.remove_reader(listener.fileno())
            loop.run_until_complete(asyncio.sleep(0))
            server.close()
            self.stopping.set()  # delayed and held requests are answered, streams cut short
            loop.run_until_complete(self._finish())
        finally:
            loop.close()

    async def _finish(self) -> None:
        """Let the answers under way end, for up to STOP_GRACE, then cancel what is left:
        exchanges, and connections asyncio had accepted but not yet handed to one."""
        loop, this = asyncio.get_running_loop(), asyncio.current_task()
        deadline = loop.time() + STOP_GRACE
        while under_way := [task for task in asyncio.all_tasks() if task is not this]:
            if loop.time() < deadline:
                await asyncio.wait(under_way, timeout=deadline - loop.time())
                continue
            for task in under_way:
                task.cancel()
            await asyncio.gather(*under_way, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports' last callbacks

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.in_flight += 1
        try:
            request = await _read_request(reader)
            if isinstance(request, int):
                exchange = _Exchange(self, writer, "GET", "/", Message())
                exchange.send(Response(request, b"", "text/plain"))
            else:
                method, target, headers, body = request
                await _Exchange(self, writer, method, target, headers).answer(body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # clients hanging up (oversize, truncate, stop) are expected
        except asyncio.CancelledError:
            pass  # stop(): the connection is closed below
        except Exception:  # a bug in the replica: print it, as a server would, and go on
            traceback.print_exc()
        finally:
            self.in_flight -= 1
            if writer.transport.get_write_buffer_size():  # a client that stopped reading
                writer.transport.abort()
            else:
                writer.close()

    def stop(self) -> None:
        """Returns promptly: stops accepting, answers delayed and held requests at once, cuts
        streams short, and ends what is still under way after STOP_GRACE."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=2)

    def __enter__(self) -> ReplicaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("ReplicaServer is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def en_url(self) -> str:
        return self.base_url + "/news/"

    @property
    def ru_url(self) -> str:
        return self.base_url + "/ru/news/"

    def section(self, k: int) -> Replica:
        """Benchmark section k: a three-article English replica created on first use."""
        if not 0 <= k < self.extra_sections:
            raise KeyError(k)
        with self._lock:
            if k not in self._sections:
                self._sections[k] = Replica(articles=3, pinned=False, sphrase_every=0, seed=k + 1)
            return self._sections[k]

    def resolve(self, target: str) -> tuple[Replica, str]:
        """(replica, mount prefix) owning a request path: its faults and request log apply."""
        path = urlsplit(target).path
        if path == "/ru" or path.startswith("/ru/"):
            return self.replica_ru, "/ru"
        m = re.match(r"/s/(\d+)(?=/)", path)
        if m and int(m[1]) < self.extra_sections:
            return self.section(int(m[1])), m[0]
        return self.replica_en, ""

    def describe(self, article: Article) -> dict[str, Any]:
        """JSON-ready article with its absolute URL, as the control endpoints answer."""
        prefix = "/ru" if article.language == "ru" else ""
        url = f"{self.base_url}{prefix}/news/news_odkb/{article.slug}/"
        return {
            **dataclasses.asdict(article),
            "published": article.published.isoformat(),
            "url": url,
        }

    def control(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        """Run one /_replica/ command; bad input answers 400, unknown ids or commands 404."""
        parts = urlsplit(target)
        name = parts.path.removeprefix("/_replica/").strip("/")
        try:
            if method == "GET" and name == "requests":
                lang = parse_qs(parts.query).get("language", [""])[0]
                reps = [self._by_language(lang)] if lang else [self.replica_en, self.replica_ru]
                return 200, [list(r) for rep in reps for r in rep.requests]
            if method != "POST":
                return 405, {"error": "use POST"}
            return 200, self._command(name, json.loads(body or b"{}"))
        except LookupError as exc:
            return 404, {"error": f"not found: {exc}"}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}

    def _command(self, name: str, data: Any) -> Any:
        if name == "fault":  # a rule or a list; routed by `language` or else by its path
            rules = data if isinstance(data, list) else [data]
            for rule in rules:
                rep = self._by_language(rule["language"]) if "language" in rule else None
                (rep or self.resolve(str(rule.get("path", "/")))[0]).faults.add(rule)
            return {"ok": True, "rules": len(rules)}
        if name in ("reset-requests", "clear-faults"):
            with self._lock:
                reps = [self.replica_en, self.replica_ru, *self._sections.values()]
            for rep in reps:
                rep.reset_requests() if name == "reset-requests" else rep.faults.clear()
            return {"ok": True}
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object")
        rep = self._by_language(data.get("language", "en"))
        title, body = data.get("title"), data.get("body")
        if name == "publish":
            when = date.fromisoformat(data["published"]) if data.get("published") else None
            return self.describe(rep.publish(title, body, when))
        if name in ("edit", "delete") and "id" not in data:
            raise ValueError("'id' is required")
        if name == "edit":
            return self.describe(rep.edit(int(data["id"]), title, body))
        if name == "delete":
            rep.delete(int(data["id"]))
            return {"ok": True, "id": int(data["id"])}
        raise LookupError(f"/_replica/{name}")

    def _by_language(self, language: str) -> Replica:
        if language not in ("en", "ru"):
            raise ValueError(f"language must be 'en' or 'ru', not {language!r}")
        return self.replica_ru if language == "ru" else self.replica_en


def serve(port: int, host: str = "127.0.0.1", articles: int = 30) -> None:
    """Blocking entry point for `newsmon replica --port N`; Ctrl-C stops it cleanly."""
    with ReplicaServer(Replica(articles), Replica(articles, language="ru"), host, port) as server:
        lines = [f"newsmon replica at {server.base_url}", f"  English: {server.en_url}"]
        lines += [f"  Russian: {server.ru_url}", f"  Control: {server.base_url}/_replica/"]
        print(*lines, "Press Ctrl-C to stop.", sep="\n", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("Replica stopped.", flush=True)
