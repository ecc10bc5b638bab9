"""Small sites for the tests, each served on 127.0.0.1 by a threaded http.server.

Each kind of site newsmon meets in the wild, in a few hundred lines, with the truth about its
articles so a test can score what a crawl stored:

- `WordPressSite`: a blog at /blog/ (/blog/page/N/), `article.post`, `time.entry-date`,
  `.entry-content` with share and related-posts boxes inside, comments, a sidebar, tag, category,
  author, date-archive and search pages, a PDF download, an RSS feed at /feed/.
- `FeedSite`: an RSS feed at /rss.xml and article pages; the home page is an empty JS shell.
- `SitemapSite`: a Russian site listed by a news sitemap (/sitemap-news.xml, index /sitemap.xml).
- `SwitchSite`: a press section whose markup is redesigned when `version` goes from 1 to 2.
- `PortalSite`: a Drupal-like Russian portal (views rows, ?page=N, lead outside the body).

The Bitrix-like CSTO section is `monitor.replica`. Content is generated from (seed, id), so the
same arguments always give the same site.
"""

from __future__ import annotations

import html
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lxml.html

# fmt: off
SUBJECTS = ["City council", "The regional court", "Local farmers", "The university", "Engineers",
            "The health ministry", "Volunteers", "The port authority", "Teachers", "Researchers",
            "The transport agency", "A citizens' panel"]
ACTIONS = ["approves", "rejects", "debates", "publishes", "opens", "reviews", "launches", "delays"]
OBJECTS = ["a plan for new cycle lanes", "the budget for public libraries",
           "a report on water quality", "a programme for rural schools",
           "the renovation of the old bridge", "new rules for street markets",
           "a study of coastal erosion", "a fund for small businesses",
           "the timetable for night trains", "a strategy against flooding"]
SENTENCES = [
    "The decision follows {n} months of consultation with residents and local businesses.",
    "Officials said the first results would be visible before the end of {year}.",
    "Critics argued that {object} had been discussed for too long without a clear outcome.",
    "According to the published figures, about {n} thousand people will be affected.",
    "A spokesperson confirmed that the documents are available at the town hall.",
    "Several experts welcomed the move but asked for independent monitoring of the work.",
    "The next public hearing is scheduled for the autumn, when the details will be presented.",
    "Funding comes partly from the national government and partly from regional taxes.",
    "Opposition members called for a vote before any contract is signed.",
    "Residents can send written comments until the end of the month.",
]
RU_SUBJECTS = ["Городская дума", "Областной суд", "Министерство здравоохранения", "Университет",
               "Транспортное агентство", "Администрация района", "Фермеры региона", "Учёные"]
RU_ACTIONS = ["одобрила", "рассмотрела", "опубликовала", "отложила", "представила", "обсудила"]
RU_OBJECTS = ["план строительства велодорожек", "бюджет городских библиотек",
              "доклад о качестве воды", "программу для сельских школ", "проект ремонта моста",
              "правила уличной торговли", "стратегию защиты от паводков"]
RU_SENTENCES = [
    "Решение принято после {n} месяцев консультаций с жителями и предпринимателями.",
    "По словам чиновников, первые результаты будут заметны до конца {year} года.",
    "Критики отметили, что обсуждение затянулось и не дало ясного результата.",
    "Согласно опубликованным данным, изменения затронут около {n} тысяч человек.",
    "Документы доступны для ознакомления в здании администрации.",
    "Эксперты поддержали решение, но попросили о независимом контроле за работами.",
    "Следующие публичные слушания назначены на осень.",
    "Финансирование поступит из федерального и регионального бюджетов.",
]
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]
RU_MONTHS = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
             "сентября", "октября", "ноября", "декабря"]
# fmt: on
PDF = b"%PDF-1.4\n% newsmon test site\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
START = datetime(2024, 4, 22, 9, 30, tzinfo=UTC)


@dataclass
class Post:
    """One article of a test site, with the truth a crawl is scored against."""

    id: int
    slug: str
    title: str
    published: datetime
    paragraphs: list[str]
    lead: str = ""
    category: str = "news"
    tags: list[str] = field(default_factory=list)

    @property
    def date(self) -> str:
        return self.published.date().isoformat()

    @property
    def summary(self) -> str:
        return self.paragraphs[0]


@dataclass
class Page:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/html; charset=utf-8"

    def encoded(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def slugify(text: str, post_id: int) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())[:6]
    return "-".join([*words, str(post_id)]) if words else f"post-{post_id}"


def make_posts(count: int, seed: int, language: str = "en") -> list[Post]:
    """Newest first; one or two a day back from START."""
    posts = []
    for pid in range(count, 0, -1):
        rng = random.Random(f"{seed}:{language}:{pid}")
        back = count - pid
        when = START - timedelta(days=(2 * back) // 3, hours=3 * (back % 3))
        if language == "ru":
            title = f"{rng.choice(RU_SUBJECTS)} {rng.choice(RU_ACTIONS)} {rng.choice(RU_OBJECTS)}"
            pool, slug = RU_SENTENCES, f"novost-{pid}"
        else:
            title = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(OBJECTS)}"
            pool, slug = SENTENCES, slugify(title, pid)
        title = f"{title} ({pid})" if language == "en" else f"{title} (№{pid})"
        fill = {"n": rng.randint(2, 40), "year": when.year + 1, "object": rng.choice(OBJECTS)}
        paragraphs = [
            " ".join(s.format(**fill) for s in rng.sample(pool, rng.randint(2, 3)))
            for _ in range(rng.randint(3, 5))
        ]
        tags = rng.sample(["budget", "transport", "schools", "environment", "courts"], 2)
        category = rng.choice(["news", "city", "region"])
        posts.append(Post(pid, slug, title, when, paragraphs, tags=tags, category=category))
    return posts


def en_date(when: datetime) -> str:
    return f"{EN_MONTHS[when.month - 1]} {when.day}, {when.year}"


def ru_date(when: datetime) -> str:
    return f"{when.day} {RU_MONTHS[when.month - 1]} {when.year}"


class Site:
    """Base class: `route(path_and_query)` answers one request; `base_url` is set when served."""

    base_url = "http://127.0.0.1"

    def __init__(self, posts: list[Post]) -> None:
        self.posts = posts  # newest first
        self.lock = threading.RLock()
        self.requests: list[str] = []

    def route(self, target: str) -> Page:
        raise NotImplementedError

    def post_path(self, post: Post) -> str:
        raise NotImplementedError

    def url(self, path: str) -> str:
        return self.base_url + path

    def article_url(self, post: Post) -> str:
        return self.url(self.post_path(post))

    def find(self, path: str) -> Post | None:
        with self.lock:
            return next((p for p in self.posts if self.post_path(p) == path), None)

    def truth(self) -> dict[str, Post]:
        """Article URL -> post, for scoring a crawl."""
        with self.lock:
            return {self.article_url(p): p for p in self.posts}

    def publish(self, title: str, paragraphs: list[str] | None = None) -> Post:
        """A new newest post, dated now."""
        with self.lock:
            pid = max(p.id for p in self.posts) + 1
            body = paragraphs or [f"{title} was announced today.", SENTENCES[4], SENTENCES[5]]
            post = Post(pid, slugify(title, pid), title, datetime.now(UTC).replace(microsecond=0),
                        body, tags=["budget"])  # fmt: skip
            self.posts.insert(0, post)
            return post


# -- WordPress-style blog --------------------------------------------------------------------------


class WordPressSite(Site):
    """A WordPress theme in the style of Twenty Seventeen, with Jetpack's boxes in the content."""

    name = "Riverside Chronicle"

    def __init__(self, posts: int = 23, per_page: int = 5, seed: int = 1) -> None:
        super().__init__(make_posts(posts, seed))
        self.per_page = per_page
        for post in self.posts:
            if post.id % 4 == 0:
                post.paragraphs.append("The full text is in the decision (PDF).")

    def post_path(self, post: Post) -> str:
        return f"/{post.published:%Y/%m/%d}/{post.slug}/"

    def route(self, target: str) -> Page:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/" and "s" in query:
            return self.listing(self.search(query["s"][0]), f"Search Results for: {query['s'][0]}")
        if m := re.fullmatch(r"/blog/(?:page/(\d+)/)?", path):
            return self.blog_page(int(m[1] or 1))
        if m := re.fullmatch(r"/(tag|category|author)/([\w-]+)/", path):
            kind, value = m[1], m[2]
            chosen = [p for p in self.posts if kind == "author" or value in (*p.tags, p.category)]
            return self.listing(chosen[: self.per_page], f"{kind.title()}: {value}")
        if re.fullmatch(r"/\d{4}/\d{2}/", path):
            return self.listing(self.posts[: self.per_page], f"Month: {path.strip('/')}")
        if path == "/feed/":
            return Page(200, self.feed(), "application/rss+xml; charset=UTF-8")
        if path in ("/comments/feed/", "/category/news/feed/"):
            return Page(200, rss("Comments", self.url("/"), []), "application/rss+xml")
        if path.endswith(".pdf"):
            return Page(200, PDF, "application/pdf")
        if path in ("/about/", "/contact/"):
            return self.document(
                path.strip("/").title(),
                f"<article class='page'><h1 class='"
                f"entry-title'>{path.strip('/').title()}</h1><div class='entry-"
                "content'><p>We are a small local newsroom.</p></div></article>",
            )
        if post := self.find(path):
            return self.article(post)
        return self.document("Page not found", "<h1>Oops! That page can't be found.</h1>", 404)

    def search(self, term: str) -> list[Post]:
        return [p for p in self.posts if term.lower() in " ".join(p.paragraphs).lower()][:5]

    def blog_page(self, number: int) -> Page:
        pages = -(-len(self.posts) // self.per_page)
        if number > pages:
            return self.document("Page not found", "<h1>Nothing here</h1>", 404)
        chosen = self.posts[(number - 1) * self.per_page : number * self.per_page]
        nav, head = [], []
        if number < pages:
            older = f"/blog/page/{number + 1}/"
            nav.append(f'<div class="nav-previous"><a href="{older}">Older posts</a></div>')
            head.append(f'<link rel="next" href="{self.url(older)}">')
        if number > 1:
            newer = "/blog/" if number == 2 else f"/blog/page/{number - 1}/"
            nav.append(f'<div class="nav-next"><a href="{newer}">Newer posts</a></div>')
        numbers = " ".join(
            f'<a class="page-numbers" href="/blog/page/{n}/">{n}</a>' for n in range(1, pages + 1)
        )
        intro = (
            '<div class="blog-intro"><p>News from the riverside. <a href="/wp-content/uploads/'
            '2024/04/annual-report.pdf">Download the annual report (PDF)</a> · <a href="/?s=budget"'
            ">Search budget stories</a></p></div>"
        )
        pager = (
            f'<nav class="navigation posts-navigation"><h2 class="screen-reader-text">Posts '
            f'navigation</h2><div class="nav-links">{"".join(nav)}</div></nav>'
            f'<div class="pagination">{numbers}</div>'
        )
        return self.listing(chosen, "Blog", intro=intro, pager=pager, head="".join(head))

    def listing(
        self, posts: list[Post], heading: str, *, intro: str = "", pager: str = "", head: str = ""
    ) -> Page:
        items = "".join(self.summary_html(p) for p in posts)
        main = (
            f'<header class="page-header"><h1 class="page-title">{esc(heading)}</h1></header>'
            f"{intro}{items}{pager}"
        )
        return self.document(heading, main, head=head)

    def summary_html(self, post: Post) -> str:
        link = self.post_path(post)
        cats = (
            f'<a href="/category/{post.category}/" rel="category tag">{post.category.title()}</a>'
        )
        tags = ", ".join(f'<a href="/tag/{t}/" rel="tag">{t}</a>' for t in post.tags)
        return (
            f'<article id="post-{post.id}" class="post-{post.id} post type-post status-publish '
            f'format-standard hentry category-{post.category}">'
            f'<header class="entry-header"><div class="entry-meta"><span class="posted-on">'
            f'<span class="screen-reader-text">Posted on</span> <a href="{link}" rel="bookmark">'
            f'<time class="entry-date published" datetime="{post.published.isoformat()}">'
            f'{en_date(post.published)}</time></a></span> <span class="byline"> by <span '
            f'class="author vcard"><a class="url fn n" href="/author/editor/">Editor</a></span>'
            f'</span></div><h2 class="entry-title"><a href="{link}" rel="bookmark">'
            f"{esc(post.title)}</a></h2></header>"
            f'<div class="entry-summary"><p>{esc(post.summary)}</p><p><a href="{link}" '
            f'class="more-link">Continue reading</a></p></div>'
            f'<footer class="entry-footer"><span class="cat-links">Posted in {cats}</span> '
            f'<span class="tags-links">Tagged {tags}</span> <span class="comments-link">'
            f'<a href="{link}#respond">Leave a comment</a></span></footer></article>'
        )

    def article(self, post: Post) -> Page:
        index = self.posts.index(post)
        older = self.posts[index + 1] if index + 1 < len(self.posts) else None
        related = [p for p in self.posts if p is not post][:3]
        body = "".join(f"<p>{esc(p)}</p>" for p in post.paragraphs)
        pdf = f'<a href="/wp-content/uploads/2024/04/decision-{post.id}.pdf">the decision (PDF)</a>'
        body = body.replace("the decision (PDF)", pdf)
        share = (
            '<div class="sharedaddy sd-sharing-enabled"><h3 class="sd-title">Share this:</h3><ul>'
            '<li><a href="https://twitter.com/share">Twitter</a></li><li><a href="https://www.'
            'facebook.com/sharer.php">Facebook</a></li></ul></div><div class="sharedaddy sd-like">'
            "<h3>Like this:</h3><span>Like Loading...</span></div>"
        )
        rel = "".join(
            f'<div class="jp-relatedposts-post"><h4><a href="{self.post_path(p)}">{esc(p.title)}'
            f'</a></h4><p class="jp-relatedposts-post-date">{en_date(p.published)}</p></div>'
            for p in related
        )
        related_box = (
            '<div id="jp-relatedposts" class="jp-relatedposts"><h3 class="jp-relatedposts-'
            f'headline"><em>Related</em></h3>{rel}</div>'
        )
        nav = ""
        if older:
            nav = (
                '<nav class="navigation post-navigation"><div class="nav-previous"><a href="'
                f'{self.post_path(older)}" rel="prev">Previous Post: {esc(older.title)}</a></div>'
                "</nav>"
            )
        comments = (
            f'<div id="comments" class="comments-area"><h2 class="comments-title">2 thoughts on '
            f'&ldquo;{esc(post.title)}&rdquo;</h2><ol class="comment-list"><li class="comment">'
            '<div class="comment-content"><p>Finally somebody is doing something about this, '
            'I have waited for years.</p></div></li><li class="comment"><div class="comment-'
            'content"><p>Who is paying for all of that? Nobody asked the taxpayers.</p></div>'
            '</li></ol><div id="respond" class="comment-respond"><h3 class="comment-reply-title">'
            'Leave a Reply</h3><form action="/wp-comments-post.php" method="post"><p>Your email '
            'address will not be published.</p><textarea name="comment"></textarea></form></div>'
            "</div>"
        )
        cats = (
            f'<a href="/category/{post.category}/" rel="category tag">{post.category.title()}</a>'
        )
        main = (
            f'<article id="post-{post.id}" class="post-{post.id} post type-post status-publish">'
            f'<header class="entry-header"><div class="entry-meta"><span class="posted-on">'
            f'<time class="entry-date published" datetime="{post.published.isoformat()}">'
            f'{en_date(post.published)}</time><time class="updated" datetime="'
            f'{(post.published + timedelta(days=2)).isoformat()}">'
            f"{en_date(post.published + timedelta(days=2))}</time></span></div>"
            f'<h1 class="entry-title">{esc(post.title)}</h1></header>'
            f'<div class="entry-content">{body}{share}{related_box}</div>'
            f'<footer class="entry-footer"><span class="cat-links">Posted in {cats}</span></footer>'
            f"</article>{nav}{comments}"
        )
        head = (
            f'<meta property="og:type" content="article"><meta property="og:title" content="'
            f'{esc(post.title)} &ndash; {self.name}"><meta property="og:site_name" content="'
            f'{self.name}"><meta property="article:published_time" content="'
            f'{post.published.isoformat()}"><link rel="canonical" href="'
            f'{self.article_url(post)}">'
        )
        return self.document(post.title, main, head=head)

    def document(self, title: str, main: str, status: int = 200, head: str = "") -> Page:
        recent = "".join(
            f'<li><a href="{self.post_path(p)}">{esc(p.title)}</a></li>' for p in self.posts[:5]
        )
        body = (
            f'<!DOCTYPE html><html lang="en-US"><head><meta charset="UTF-8"><title>{esc(title)} '
            f"&ndash; {self.name}</title>"
            f'<link rel="alternate" type="application/rss+xml" title="{self.name} &raquo; Feed" '
            f'href="{self.url("/feed/")}"><link rel="alternate" type="application/rss+xml" '
            f'title="{self.name} &raquo; Comments Feed" href="{self.url("/comments/feed/")}">'
            f'{head}</head><body class="blog"><div id="page" class="site">'
            f'<header id="masthead" class="site-header"><p class="site-title"><a href="/" '
            f'rel="home">{self.name}</a></p><nav id="site-navigation" class="main-navigation">'
            '<ul><li><a href="/">Home</a></li><li><a href="/blog/">Blog</a></li><li><a href='
            '"/about/">About</a></li><li><a href="/contact/">Contact</a></li></ul></nav></header>'
            f'<div id="content" class="site-content"><main id="main" class="site-main">{main}'
            '</main><aside id="secondary" class="widget-area"><section class="widget '
            'widget_search"><form role="search" method="get" action="/"><input type="search" '
            'name="s"><button type="submit">Search</button></form></section><section class='
            '"widget widget_recent_entries"><h2 class="widget-title">Recent Posts</h2><ul>'
            f'{recent}</ul></section><section class="widget widget_categories"><h2 class="widget-'
            'title">Categories</h2><ul><li><a href="/category/news/">News</a></li><li><a href='
            '"/category/city/">City</a></li></ul></section><section class="widget widget_archive">'
            '<h2 class="widget-title">Archives</h2><ul><li><a href="/2024/04/">April 2024</a></li>'
            '<li><a href="/2024/03/">March 2024</a></li></ul></section></aside></div>'
            '<footer id="colophon" class="site-footer"><div class="site-info">Proudly powered '
            "by WordPress. Subscribe to our newsletter for weekly updates.</div></footer></div>"
            "</body></html>"
        )
        return Page(status, body)

    def feed(self) -> str:
        return rss(self.name, self.url("/blog/"), self.posts[:10], self.article_url)


def rss(title: str, link: str, posts: list[Post], url_of: Any = None, full: bool = True) -> str:
    items = "".join(
        f"<item><title>{esc(p.title)}</title><link>{esc(url_of(p))}</link>"
        f'<guid isPermaLink="false">{esc(link)}?p={p.id}</guid>'
        f"<pubDate>{format_datetime(p.published)}</pubDate>"
        f"<description>{esc(p.summary)}</description>"
        + (
            f"<content:encoded><![CDATA[{''.join(f'<p>{x}</p>' for x in p.paragraphs)}]]>"
            "</content:encoded>"
            if full
            else ""
        )
        + "</item>"
        for p in posts
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:content='
        '"http://purl.org/rss/1.0/modules/content/"><channel>'
        f"<title>{esc(title)}</title><link>{esc(link)}</link><description>Latest posts"
        f"</description>{items}</channel></rss>"
    )


# -- feed-only site --------------------------------------------------------------------------------


class FeedSite(Site):
    """The listing is a JavaScript shell; the RSS feed at /rss.xml is the only usable list."""

    def __init__(self, posts: int = 8, seed: int = 2) -> None:
        super().__init__(make_posts(posts, seed))

    def post_path(self, post: Post) -> str:
        return f"/news/{post.id}-{post.slug}.html"

    def route(self, target: str) -> Page:
        path = urlsplit(target).path
        if path == "/rss.xml":
            with self.lock:
                feed = rss("Harbour Gazette", self.url("/"), self.posts[:20], self.article_url,
                           full=False)  # fmt: skip
            return Page(200, feed, "application/rss+xml; charset=utf-8")
        if path == "/":
            return Page(200, self.shell())
        if path == "/untitled.html":  # no <title>, no heading: nothing names the page
            return Page(
                200, "<html><body><div><p>" + " ".join(SENTENCES) + "</p></div></body></html>"
            )
        if post := self.find(path):
            return Page(200, self.article(post))
        return Page(404, "<html><body><h1>404</h1></body></html>")

    def shell(self) -> str:
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Harbour Gazette</title>'
            '<link rel="alternate" type="application/rss+xml" title="News" href="/rss.xml">'
            '</head><body><div id="app">Loading…</div><script src="/app.js"></script>'
            "<noscript>Please enable JavaScript.</noscript></body></html>"
        )

    def article(self, post: Post) -> str:
        text = "".join(f"<p>{esc(p)}</p>" for p in post.paragraphs)
        return (
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(post.title)} | '
            'Harbour Gazette</title></head><body><div class="top">Harbour Gazette — '
            '<a href="/">Home</a> <a href="/rss.xml">RSS</a></div><div class="wrap"><h1>'
            f'{esc(post.title)}</h1><div class="date">{post.published:%d.%m.%Y %H:%M}</div>'
            f'<div class="text">{text}</div><div class="tools">Print this page · Send to a '
            'friend</div></div><div class="bottom">© Harbour Gazette. All rights reserved.'
            "</div></body></html>"
        )


# -- sitemap site ----------------------------------------------------------------------------------


class SitemapSite(Site):
    """A Russian newsroom whose articles are found through a Google News sitemap."""

    def __init__(self, posts: int = 8, seed: int = 3) -> None:
        super().__init__(make_posts(posts, seed, language="ru"))

    def post_path(self, post: Post) -> str:
        return f"/articles/{post.slug}"

    def route(self, target: str) -> Page:
        path = urlsplit(target).path
        xml = "application/xml; charset=utf-8"
        if path == "/sitemap.xml":
            return Page(200, self.index(), xml)
        if path == "/sitemap-news.xml":
            return Page(200, self.news_sitemap(), xml)
        if path == "/sitemap-pages.xml":
            urls = "".join(f"<url><loc>{self.url(p)}</loc></url>" for p in ("/about", "/contacts"))
            return Page(200, f'<urlset xmlns="{SITEMAP_NS}">{urls}</urlset>', xml)
        if post := self.find(path):
            return Page(200, self.article(post))
        return Page(404, "<html><body><h1>Страница не найдена</h1></body></html>")

    def index(self) -> str:
        maps = "".join(
            f"<sitemap><loc>{self.url(p)}</loc><lastmod>{d}</lastmod></sitemap>"
            for p, d in (("/sitemap-pages.xml", "2023-01-01"), ("/sitemap-news.xml", "2024-04-22"))
        )
        return f'<?xml version="1.0"?><sitemapindex xmlns="{SITEMAP_NS}">{maps}</sitemapindex>'

    def news_sitemap(self) -> str:
        with self.lock:
            urls = "".join(
                f"<url><loc>{self.article_url(p)}</loc><news:news><news:publication><news:name>"
                "Вести Заречья</news:name><news:language>ru</news:language></news:publication>"
                f"<news:publication_date>{p.published.isoformat()}</news:publication_date>"
                f"<news:title>{esc(p.title)}</news:title></news:news></url>"
                for p in self.posts
            )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{SITEMAP_NS}" xmlns:news='
            f'"http://www.google.com/schemas/sitemap-news/0.9">{urls}</urlset>'
        )

    def article(self, post: Post) -> str:
        text = "".join(f"<p>{esc(p)}</p>" for p in post.paragraphs)
        return (
            f'<!DOCTYPE html><html lang="ru"><head><meta charset="utf-8"><title>{esc(post.title)}'
            ' — Вести Заречья</title></head><body><nav class="menu"><a href="/">Главная</a> '
            '<a href="/articles/">Новости</a> <a href="/about">О нас</a></nav><div class="layout">'
            f'<div class="article"><h1 class="article-title">{esc(post.title)}</h1><div '
            f'class="article-info">Опубликовано {ru_date(post.published)} г., '
            f'{post.published:%H:%M}</div><div class="article-body">{text}</div>'
            '<div class="article-share">Поделиться: ВКонтакте Телеграм</div></div>'
            '<div class="side"><h3>Популярное</h3><ul><li>Погода на выходные: '
            "ожидаются дожди</li><li>Афиша недели</li></ul></div></div>"
            "<footer>© Вести Заречья, 2024. Перепечатка запрещена.</footer></body></html>"
        )


SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


# -- a site redesigned between runs ----------------------------------------------------------------


class SwitchSite(Site):
    """Version 1 has the CSTO (Bitrix) markup; version 2 is a redesign that breaks its selectors."""

    def __init__(self, posts: int = 7, per_page: int = 5, seed: int = 4) -> None:
        super().__init__(make_posts(posts, seed))
        self.per_page, self.version = per_page, 1

    def post_path(self, post: Post) -> str:
        return f"/press/{post.slug}/"

    def route(self, target: str) -> Page:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if parts.path == "/press/":
            number = int((query.get("PAGEN_1") or query.get("page") or ["1"])[0])
            return Page(200, self.listing(number))
        if post := self.find(parts.path):
            return Page(200, self.article(post))
        return Page(404, "<html><body><h1>Not found</h1></body></html>")

    def listing(self, number: int) -> str:
        with self.lock:
            pages = -(-len(self.posts) // self.per_page)
            chosen = self.posts[(number - 1) * self.per_page : number * self.per_page]
        if self.version == 1:
            rows = "".join(
                f'<div class="news-item"><span class="news-date">{p.published:%d.%m.%Y}</span>'
                f'<a class="news-title" href="{self.post_path(p)}">{esc(p.title)}</a>'
                f'<p class="news-preview">{esc(p.summary)}</p></div>'
                for p in chosen
            )
            more = (
                f'<a class="modern-page-next" href="/press/?PAGEN_1={number + 1}">Next</a>'
                if number < pages
                else ""
            )
            main = f'<div class="news-list">{rows}</div>{more}'
        else:
            rows = "".join(
                f'<article class="card"><h3 class="card__title"><a href="{self.post_path(p)}">'
                f'{esc(p.title)}</a></h3><time datetime="{p.published.isoformat()}">'
                f'{p.published:%d %b %Y}</time><p class="card__lead">{esc(p.summary)}</p></article>'
                for p in chosen
            )
            more = (
                f'<a rel="next" href="/press/?page={number + 1}">Older</a>'
                if number < pages
                else ""
            )
            main = f'<section class="feed">{rows}</section><nav class="pages">{more}</nav>'
        return self.document("Press releases", main)

    def article(self, post: Post) -> str:
        text = "".join(f"<p>{esc(p)}</p>" for p in post.paragraphs)
        if self.version == 1:
            main = (
                f'<div class="news-detail"><h1>{esc(post.title)}</h1><span class="news-date-time">'
                f'{post.published:%d.%m.%Y}</span><div class="news-detail-text">{text}</div></div>'
            )
        else:
            main = (
                f'<article class="story"><h1 class="story__title">{esc(post.title)}</h1><time '
                f'class="story__date" datetime="{post.published.isoformat()}">'
                f'{post.published:%d %B %Y}</time><div class="story__body">{text}</div></article>'
            )
        return self.document(post.title, main)

    def document(self, title: str, main: str) -> str:
        return (
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
            '<body><header><a href="/">Agency</a> <a href="/press/">Press</a></header>'
            f"<main>{main}</main><footer>Agency press office</footer></body></html>"
        )


# -- a Drupal-like portal --------------------------------------------------------------------------


class PortalSite(Site):
    """Russian portal: views rows, a lead outside the body, inline 'read also', cookie banner."""

    def __init__(self, posts: int = 12, per_page: int = 6, seed: int = 5) -> None:
        super().__init__(make_posts(posts, seed, language="ru"))
        self.per_page = per_page
        for post in self.posts:
            post.lead = f"Коротко: {post.paragraphs[0].split('.')[0].lower()}."
            post.paragraphs.insert(0, post.lead)

    def post_path(self, post: Post) -> str:
        return f"/novosti/{post.published:%Y-%m-%d}/{post.slug}"

    def route(self, target: str) -> Page:
        parts = urlsplit(target)
        if parts.path == "/novosti/":
            page = int(parse_qs(parts.query).get("page", ["0"])[0])
            return Page(200, self.listing(page))
        if post := self.find(parts.path):
            return Page(200, self.article(post))
        return Page(404, "<html><body><h1>Страница не найдена</h1></body></html>")

    def listing(self, page: int) -> str:
        pages = -(-len(self.posts) // self.per_page)
        chosen = self.posts[page * self.per_page : (page + 1) * self.per_page]
        rows = "".join(
            f'<div class="views-row"><div class="views-field-title"><a href="{self.post_path(p)}">'
            f'{esc(p.title)}</a></div><div class="views-field-created">{ru_date(p.published)}, '
            f"{p.published:%H:%M}</div></div>"
            for p in chosen
        )
        pager = ""
        if page + 1 < pages:
            pager = (
                f'<ul class="pager"><li class="pager-current">{page + 1}</li><li class="pager-'
                f'next"><a href="/novosti/?page={page + 1}">следующая ›</a></li></ul>'
            )
        return self.document("Новости", f'<div class="view-content">{rows}</div>{pager}')

    def article(self, post: Post) -> str:
        body = [f"<p>{esc(p)}</p>" for p in post.paragraphs[1:]]
        other = next(p for p in self.posts if p is not post)
        body.insert(
            1,
            f'<div class="inline-related">Читайте также: <a href="{self.post_path(other)}">'
            f"{esc(other.title)}</a></div>",
        )
        main = (
            '<div class="breadcrumb"><a href="/">Главная</a> › <a href="/novosti/">Новости</a>'
            f'</div><h1 class="page-title">{esc(post.title)}</h1><div class="field-date">'
            f'{ru_date(post.published)}, {post.published:%H:%M}</div><div class="field-lead">'
            f'{esc(post.lead)}</div><div class="field-body">{"".join(body)}</div>'
            '<div class="field-tags">Теги: <a href="/tags/gorod">город</a> <a href="/tags/'
            'byudzhet">бюджет</a></div><div class="comments"><h3>Комментарии (1)</h3><div '
            'class="comment">Иван: наконец-то дождались перемен к лучшему.</div></div>'
        )
        return self.document(post.title, main)

    def document(self, title: str, main: str) -> str:
        return (
            f'<!DOCTYPE html><html lang="ru"><head><meta charset="utf-8"><title>{esc(title)} | '
            'Портал Заречья</title></head><body><div class="cookie-banner">Мы используем файлы '
            "cookie для улучшения работы сайта. Продолжая просмотр, вы соглашаетесь с этим."
            '</div><div class="header"><a href="/">Портал Заречья</a><ul class="menu"><li><a '
            'href="/novosti/">Новости</a></li><li><a href="/afisha/">Афиша</a></li></ul></div>'
            f'<div class="region-content">{main}</div><div class="region-sidebar"><div class='
            '"block-newsletter">Подпишитесь на рассылку новостей нашего портала каждую неделю'
            '</div></div><div class="footer">Сетевое издание «Портал Заречья», 2024</div>'
            "</body></html>"
        )


# -- serving ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        site = self.server.site
        with site.lock:
            site.requests.append(self.path)
        try:
            page = site.route(self.path)
        except Exception as exc:  # a bug in a test site shows up as a 500 with the reason
            page = Page(500, f"<html><body><pre>{esc(repr(exc))}</pre></body></html>")
        body = page.encoded()
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, site: Site) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site


class SiteServer:
    """Serve one Site on a free 127.0.0.1 port: `with SiteServer(WordPressSite()) as site: ...`."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._httpd: _Server | None = None

    def __enter__(self) -> Site:
        self._httpd = _Server(self.site)
        self.site.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self.site

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


# -- scoring ---------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def words(text: str | None) -> set[str]:
    return {w.lower() for w in _WORD.findall(text or "")}


def visible_text(page_html: str) -> str:
    root = lxml.html.fromstring(page_html)
    for node in root.xpath("//script | //style | //head | //noscript"):
        node.drop_tree()
    return root.text_content()


def body_scores(page_html: str, body: str | None, post: Post) -> tuple[float, float]:
    """(share of the true paragraphs' words in `body`, share of boilerplate words absent).

    Boilerplate is every word the page shows that is neither in the article's paragraphs nor in
    its title (a body that repeats the title is neither rewarded nor punished).
    """
    truth = words(" ".join(post.paragraphs))
    boiler = words(visible_text(page_html)) - truth - words(post.title)
    found = words(body)
    recall = len(truth & found) / len(truth) if truth else 1.0
    clean = 1 - len(boiler & found) / len(boiler) if boiler else 1.0
    return recall, clean
