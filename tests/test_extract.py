"""Listing and article extraction: configured selectors first, generic fallbacks after.

Pages come from the replica's own renderer (`monitor.replica.route`, no server needed) or are
written by hand for the fallbacks the replica does not exercise. Whether an out-of-range Bitrix
page repeats the last one is the spider's business (see test_crawl.py), not extraction's.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from scrapy.http import HtmlResponse, Request

from monitor.config import CSTO_SELECTORS, Selectors, SourceConfig
from monitor.replica import Article, Replica, date_words, route
from scraper.article import normalize_article, page_reader, read_article
from scraper.extract import HtmlPage, extract_article, extract_listing
from scraper.feeds import discover_feeds
from scraper.spiders.news import _page
from storage.normalize import (
    canonical_url,
    clean_text,
    find_date,
    normalize_whitespace,
    prefer_canonical,
)

SITE = "http://csto.test"
EN = Replica(articles=25, per_page=10)
RU = Replica(articles=12, language="ru")
NO_SELECTORS = Selectors()


def served(rep: Replica, target: str, *, charset_header: bool = True) -> HtmlResponse:
    """The replica's answer for a path, as Scrapy would hand it to the spider."""
    prefix = "/ru" if rep.language == "ru" else ""
    answer = route(rep, prefix, target, SITE + prefix)
    assert answer.status == 200, target
    content_type = answer.content_type if charset_header else "text/html"
    return HtmlResponse(SITE + target, body=answer.body, headers={"Content-Type": content_type})


def article_page(rep: Replica, article_id: int) -> HtmlResponse:
    prefix = "/ru" if rep.language == "ru" else ""
    return served(rep, f"{prefix}/news/news_odkb/{rep.article(article_id).slug}/")


def hand_written(body: str, url: str = f"{SITE}/news/") -> HtmlResponse:
    text = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{body}</html>"
    return HtmlResponse(url, body=text.encode("utf-8"))


def url_of(article: Article) -> str:
    prefix = "/ru" if article.language == "ru" else ""
    return f"{SITE}{prefix}/news/news_odkb/{article.slug}/"


def first_page(rep: Replica) -> list[Article]:
    """Page 1 as the site shows it: the pinned oldest item, then the newest ones."""
    _, _, items = rep.listing(1)
    return [rep.pinned_article(), *items]


def body_text(article: Article) -> str:
    return "\n\n".join(normalize_whitespace(p) for p in article.paragraphs)


# -- listing entries -------------------------------------------------------------------------------


def test_listing_selectors_give_one_entry_per_item():
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", CSTO_SELECTORS)
    assert [canonical_url(e.url) for e in listing.entries] == [url_of(a) for a in first_page(EN)]


def test_listing_selectors_give_each_entry_its_title_date_and_summary():
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", CSTO_SELECTORS)
    expected = [(a.title, f"{a.published:%d.%m.%Y}", a.lead) for a in first_page(EN)]
    assert [(e.title, e.date, e.summary) for e in listing.entries] == expected
    assert listing.origin["item"] == "selector"


def test_listing_entries_are_absolute_urls_on_the_site():
    listing = extract_listing(served(EN, "/news/?PAGEN_1=2"), f"{SITE}/news/", CSTO_SELECTORS)
    assert all(e.url.startswith(f"{SITE}/news/news_odkb/") for e in listing.entries)


def test_listing_without_selectors_finds_every_entry_by_fallback():
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", NO_SELECTORS)
    assert [canonical_url(e.url) for e in listing.entries] == [url_of(a) for a in first_page(EN)]
    assert [e.title for e in listing.entries] == [a.title for a in first_page(EN)]


def test_listing_fallback_entries_carry_their_own_date():
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", NO_SELECTORS)
    assert [e.date for e in listing.entries] == [a.published.isoformat() for a in first_page(EN)]


def test_listing_item_selector_matching_nothing_falls_back_and_says_so():
    selectors = Selectors(item="div.no-such-entry", link="a.news-title::attr(href)")
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", selectors)
    assert listing.origin["item"] == "fallback"
    assert [canonical_url(e.url) for e in listing.entries] == [url_of(a) for a in first_page(EN)]


def test_listing_xpath_selectors():
    selectors = Selectors(
        item="xpath://div[contains(concat(' ', @class, ' '), ' news-item ')]",
        link="xpath:.//a[@class='news-title']/@href",
        title="xpath:.//a[@class='news-title']/text()",
        date="xpath:.//span[@class='news-date']/text()",
        next_page="xpath://a[@class='modern-page-next']/@href",
    )
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", selectors)
    expected = [(url_of(a), a.title, f"{a.published:%d.%m.%Y}") for a in first_page(EN)]
    assert [(canonical_url(e.url), e.title, e.date) for e in listing.entries] == expected
    assert listing.next_page == f"{SITE}/news/?PAGEN_1=2"


def test_listing_entries_are_deduplicated_by_url():
    page = hand_written(
        "<body><div class='news-list'>"
        "<a href='/news/news_odkb/a-1/'><img src='a.jpg'></a><a href='/news/news_odkb/a-1/'>A</a>"
        "<a href='/news/news_odkb/b-2/'>B</a></div></body>"
    )
    listing = extract_listing(page, page.url, NO_SELECTORS)
    assert [(e.url, e.title) for e in listing.entries] == [
        (f"{SITE}/news/news_odkb/a-1/", "A"),
        (f"{SITE}/news/news_odkb/b-2/", "B"),
    ]


def test_windows_1251_listing_decodes_from_the_http_header():
    listing = extract_listing(served(RU, "/ru/news/"), f"{SITE}/ru/news/", CSTO_SELECTORS)
    assert [e.title for e in listing.entries] == [a.title for a in first_page(RU)]


def test_windows_1251_listing_decodes_from_the_meta_tag_alone():
    page = served(RU, "/ru/news/", charset_header=False)
    listing = extract_listing(page, f"{SITE}/ru/news/", CSTO_SELECTORS)
    assert [e.title for e in listing.entries] == [a.title for a in first_page(RU)]


# -- next page -------------------------------------------------------------------------------------


def test_next_page_from_the_configured_selector():
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", CSTO_SELECTORS)
    assert listing.next_page == f"{SITE}/news/?PAGEN_1=2"
    assert listing.origin["next_page"] == "selector"


def test_next_page_of_the_replica_without_selectors():
    page = served(EN, "/news/?PAGEN_1=2")
    assert extract_listing(page, page.url, NO_SELECTORS).next_page == f"{SITE}/news/?PAGEN_1=3"


def test_last_page_has_no_next_page():
    page = served(EN, "/news/?PAGEN_1=3")
    assert extract_listing(page, page.url, CSTO_SELECTORS).next_page is None
    assert extract_listing(page, page.url, NO_SELECTORS).next_page is None


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("<a rel='next' href='/news/?PAGEN_1=3'>3</a>", id="a-rel-next"),
        pytest.param("<link rel='next' href='/news/?PAGEN_1=3'>", id="link-rel-next"),
        pytest.param("<a href='/news/?PAGEN_1=3'>Next</a>", id="next-label"),
        pytest.param("<a href='/news/?PAGEN_1=3'> Next page </a>", id="next-page-label"),
        pytest.param("<a href='/news/?PAGEN_1=3'>След.</a>", id="russian-label"),
        pytest.param("<a href='/news/?PAGEN_1=3'>»</a>", id="guillemet"),
    ],
)
def test_next_page_fallback(link):
    page = hand_written(
        f"<body><a href='/news/?PAGEN_1=1'>1</a> <a href='/news/?PAGEN_1=2'>2</a> {link}</body>",
        url=f"{SITE}/news/?PAGEN_1=2",
    )
    assert extract_listing(page, page.url, NO_SELECTORS).next_page == f"{SITE}/news/?PAGEN_1=3"


def test_next_page_fallback_when_the_selector_matches_nothing():
    page = hand_written("<body><a href='/news/?PAGEN_1=2'>Next</a></body>")
    listing = extract_listing(page, page.url, Selectors(next_page="a.gone::attr(href)"))
    assert listing.next_page == f"{SITE}/news/?PAGEN_1=2"


def test_next_page_on_another_site_is_ignored():
    page = hand_written("<body><a rel='next' href='https://elsewhere.test/news/?p=2'>Next</a>")
    assert extract_listing(page, page.url, NO_SELECTORS).next_page is None


# -- <base href> -----------------------------------------------------------------------------------

# A page under /en/ whose <base href> is the site root: "news/..." means /news/..., as browsers
# read it, not /en/news/news/...
BASED = f"{SITE}/en/news/"


def based(body: str, base: str = "/") -> HtmlResponse:
    return hand_written(f"<base href='{base}'></head><body>{body}</body>", url=BASED)


def test_configured_listing_links_resolve_against_the_pages_base_href():
    items = "".join(
        f"<div class='news-item'><a class='news-title' href='news/story-{n}/'>Story {n}</a></div>"
        for n in range(3)
    )
    listing = extract_listing(based(items), BASED, CSTO_SELECTORS)
    assert [entry.url for entry in listing.entries] == [f"{SITE}/news/story-{n}/" for n in range(3)]


def test_detected_listing_links_resolve_against_the_pages_base_href():
    items = "".join(
        f"<li><a href='news/summit-story-{n}/'>Ministers met for summit talks number {n}</a>"
        f" <span>0{n + 1}.04.2024</span></li>"
        for n in range(4)
    )
    listing = extract_listing(based(f"<ul>{items}</ul>"), BASED, NO_SELECTORS)
    assert {entry.url for entry in listing.entries} == {
        f"{SITE}/news/summit-story-{n}/" for n in range(4)
    }


def test_next_page_resolves_against_the_pages_base_href():
    page = based("<a rel='next' href='news/?PAGEN_1=2'>Next</a>")
    assert extract_listing(page, BASED, NO_SELECTORS).next_page == f"{SITE}/news/?PAGEN_1=2"


def test_a_relative_base_href_is_itself_relative_to_the_page():
    page = based("<a rel='next' href='?PAGEN_1=2'>Next</a>", base="../")
    assert extract_listing(page, BASED, NO_SELECTORS).next_page == f"{SITE}/en/?PAGEN_1=2"


def test_article_attachments_and_canonical_resolve_against_the_pages_base_href():
    page = hand_written(
        "<base href='/'><link rel='canonical' href='news/story/'></head>"
        "<body><h1>T</h1><a href='upload/a.pdf'>a</a></body>",
        url=f"{SITE}/en/news/story/",
    )
    fields = extract_article(page, page.url, NO_SELECTORS)
    assert fields.attachments == [f"{SITE}/upload/a.pdf"]
    assert fields.canonical == f"{SITE}/news/story/"


def test_configured_next_page_resolves_against_the_pages_base_href():
    page = based("<a class='modern-page-next' href='news/?PAGEN_1=2'>2</a>")
    listing = extract_listing(page, BASED, CSTO_SELECTORS)
    assert listing.next_page == f"{SITE}/news/?PAGEN_1=2"


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("<a href='news/?PAGEN_1=2'>Older posts</a>", id="label"),
        pytest.param(
            "<a href='news/?PAGEN_1=1'>1</a> <a href='news/?PAGEN_1=2'>2</a>", id="number"
        ),
    ],
)
def test_detected_next_page_resolves_against_the_pages_base_href(link):
    # /news/ itself, whose pager links are written relative to the site root
    page = hand_written(f"<base href='/'></head><body>{link}</body>", url=f"{SITE}/news/")
    next_page = extract_listing(page, page.url, NO_SELECTORS).next_page
    assert next_page == f"{SITE}/news/?PAGEN_1=2"


@pytest.mark.parametrize(
    "arrow",
    [
        "<a class='next' href='#'>›</a>",
        "<a rel='next' href='#'>›</a>",
        "<a href=''>Next</a>",
        "<a href='#' title='Next'>→</a>",
    ],
)
def test_a_placeholder_next_arrow_never_leads_to_the_base(arrow):
    next_page = extract_listing(based(arrow), BASED, NO_SELECTORS).next_page
    assert next_page in (None, BASED, f"{BASED}#")  # the page itself, as without a base


def test_an_unparseable_link_costs_only_itself():
    items = "".join(
        f"<div class='news-item'><a class='news-title' href='{href}'>Ministers met in {href}</a>"
        " <span>01.04.2024</span></div>"
        for href in ("http://[broken/", "/news/story-1/", "/news/story-2/", "/news/story-3/")
    )
    for selectors in (CSTO_SELECTORS, NO_SELECTORS):
        page = hand_written(f"</head><body>{items}<a rel='next' href='http://[x/'>Next</a></body>")
        listing = extract_listing(page, page.url, selectors)
        assert f"{SITE}/news/story-1/" in [entry.url for entry in listing.entries]


def test_an_unparseable_canonical_keeps_the_article():
    page = hand_written(
        "<link rel='canonical' href='http://[broken/'></head><body><h1>T</h1><p>Body.</p></body>",
        url=f"{SITE}/news/story/",
    )
    fields = extract_article(page, page.url, NO_SELECTORS)
    assert fields.canonical == "http://[broken/"  # left for prefer_canonical, which ignores it
    assert prefer_canonical(page.url, fields.canonical) == f"{SITE}/news/story/"


def test_a_discovered_feed_resolves_against_the_pages_base_href():
    page = hand_written(
        "<base href='/'><link rel='alternate' type='application/rss+xml' href='news/rss/'></head>",
        url=BASED,
    )
    assert discover_feeds(page, BASED) == [f"{SITE}/news/rss/"]


# -- article title ---------------------------------------------------------------------------------


def test_article_fields_from_the_csto_selectors():
    fields = extract_article(article_page(EN, 7), f"{SITE}/news/", CSTO_SELECTORS)
    wanted = EN.article(7)
    assert fields.title == wanted.title
    assert fields.date == f"{wanted.published:%d.%m.%Y}"
    assert clean_text(fields.body_html) == body_text(wanted)
    assert set(fields.origin.values()) == {"selector"}


def test_article_title_falls_back_to_og_title():
    page = hand_written(
        "<meta property='og:title' content='From og:title'><title>From title - CSTO</title>"
        "</head><body><h1>From h1</h1><p>Text.</p></body>"
    )
    assert extract_article(page, page.url, NO_SELECTORS).title == "From og:title"


def test_article_title_falls_back_to_h1():
    page = hand_written("<title>From title - CSTO</title></head><body><h1>From h1</h1></body>")
    assert extract_article(page, page.url, NO_SELECTORS).title == "From h1"


@pytest.mark.parametrize("suffix", [" - CSTO", " | ODKB", " — CSTO", " :: CSTO"])
def test_article_title_falls_back_to_the_page_title_without_the_site_name(suffix):
    page = hand_written(f"<title>Consultations were held{suffix}</title></head><body></body>")
    assert extract_article(page, page.url, NO_SELECTORS).title == "Consultations were held"


def test_article_title_selector_matching_nothing_falls_back_and_says_so():
    selectors = Selectors(article_title=".no-such-title::text")
    fields = extract_article(article_page(EN, 7), f"{SITE}/news/", selectors)
    assert fields.title == EN.article(7).title
    assert fields.origin["article_title"] == "fallback"


def test_article_title_of_the_replica_without_selectors():
    fields = extract_article(article_page(EN, 12), f"{SITE}/news/", NO_SELECTORS)
    assert fields.title == EN.article(12).title


def test_russian_article_title_decodes_to_cyrillic():
    fields = extract_article(article_page(RU, 5), f"{SITE}/ru/news/", NO_SELECTORS)
    assert fields.title == RU.article(5).title


# -- article date ----------------------------------------------------------------------------------


def test_article_date_from_time_datetime():
    page = hand_written(
        "</head><body><h1>Title</h1><time datetime='2024-04-22T10:30:00+03:00'>Monday</time>"
    )
    assert extract_article(page, page.url, NO_SELECTORS).date == "2024-04-22T10:30:00+03:00"


def test_article_date_from_meta_published_time():
    page = hand_written(
        "<meta property='article:published_time' content='2024-04-18'></head>"
        "<body><h1>Title</h1><p>Text.</p></body>"
    )
    assert extract_article(page, page.url, NO_SELECTORS).date == "2024-04-18"


SEED_SHAPED = """
<title>Consultations were held on international flights - CSTO</title></head><body>
<div class="sidebar">
 <div><span>22.04.2024</span><a href="/news/news_odkb/a/">On 22 April 2024, the CSTO
  Secretariat hosted a working meeting.</a></div>
 <div><span>22.04.2024</span><a href="/news/news_odkb/b/">From 22 to 26 April, this year,
  the CSTO Secretariat is holding an annual training meeting.</a></div>
 <div><span>18.04.2024</span><a href="/news/news_odkb/c/">The meeting was held in Moscow.</a>
 </div>
</div>
<div class="content">
 <h1>Consultations were held on international flights</h1>
 <p>Consultations were held on international flights 06.04.2022</p>
 <p>On April 5-6 in Moscow, on the basis of the CSTO Joint Staff, representatives held
  consultations.</p>
 <p>They discussed the Agreement of 10 December 2010 and of 15 September 2015.</p>
 <p><a href="javascript:history.back()">Go back</a></p>
 <p><a href="/news/news_odkb/">Back to the section</a></p>
</div></body>
"""


def test_article_date_printed_next_to_the_title_like_the_seed_page():
    page = hand_written(SEED_SHAPED, url=f"{SITE}/news/news_odkb/consultations/")
    fields = extract_article(page, page.url, NO_SELECTORS)
    assert fields.title == "Consultations were held on international flights"
    assert find_date(fields.date) == "2022-04-06"


def test_article_date_of_the_replica_without_selectors():
    fields = extract_article(article_page(EN, 20), f"{SITE}/news/", NO_SELECTORS)
    assert find_date(fields.date) == EN.article(20).published.isoformat()


def test_russian_article_page_writes_some_dates_in_words():
    wanted = RU.article(9)  # the replica writes every third Russian date in words
    fields = extract_article(article_page(RU, 9), f"{SITE}/ru/news/", CSTO_SELECTORS)
    assert fields.date == date_words(wanted.published, "ru")


@pytest.mark.parametrize(
    "selectors",
    [pytest.param(CSTO_SELECTORS, id="selector"), pytest.param(NO_SELECTORS, id="fallback")],
)
def test_russian_article_date_in_words_parses(selectors):
    wanted = RU.article(9)
    fields = extract_article(article_page(RU, 9), f"{SITE}/ru/news/", selectors)
    assert find_date(fields.date, ["ru"]) == wanted.published.isoformat()


def test_article_date_selector_text_without_a_date_falls_back():
    selectors = Selectors(article_date="h1::text")
    fields = extract_article(article_page(EN, 20), f"{SITE}/news/", selectors)
    assert find_date(fields.date) == EN.article(20).published.isoformat()


# -- article body ----------------------------------------------------------------------------------


def test_article_body_of_the_replica_without_selectors():
    fields = extract_article(article_page(EN, 14), f"{SITE}/news/", NO_SELECTORS)
    assert clean_text(fields.body_html) == body_text(EN.article(14))


def test_article_body_fallback_is_the_block_with_the_most_paragraph_text():
    page = hand_written(
        "</head><body><div class='menu'><p><a href='/a/'>A very long menu link text that is"
        " only a link and never article text at all</a></p></div>"
        "<div class='story'><p>First paragraph of the story.</p><p>Second paragraph.</p></div>"
        "</body>"
    )
    body = clean_text(extract_article(page, page.url, NO_SELECTORS).body_html)
    assert body == "First paragraph of the story.\n\nSecond paragraph."


def test_article_body_selector_matching_nothing_falls_back_and_says_so():
    selectors = Selectors(article_body=".no-such-body")
    fields = extract_article(article_page(EN, 14), f"{SITE}/news/", selectors)
    assert clean_text(fields.body_html) == body_text(EN.article(14))
    assert fields.origin["article_body"] == "fallback"


# -- attachments and canonical ---------------------------------------------------------------------


def test_article_attachment_links_are_absolute():
    fields = extract_article(article_page(EN, 8), f"{SITE}/news/", CSTO_SELECTORS)
    assert fields.attachments == [f"{SITE}/files/statement-8.pdf"]


def test_article_without_attachment_has_none():
    assert extract_article(article_page(EN, 9), f"{SITE}/news/", CSTO_SELECTORS).attachments == []


def test_article_attachments_are_office_and_pdf_documents_once_each():
    page = hand_written(
        "</head><body><h1>T</h1><a href='/upload/a.pdf'>a</a> <a href='/upload/b.DOCX'>b</a>"
        " <a href='/upload/c.xls'>c</a> <a href='/upload/a.pdf'>a again</a>"
        " <a href='/news/other/'>not a file</a> <a href='/upload/photo.jpg'>photo</a></body>",
        url=f"{SITE}/news/news_odkb/x/",
    )
    assert extract_article(page, page.url, NO_SELECTORS).attachments == [
        f"{SITE}/upload/a.pdf",
        f"{SITE}/upload/b.DOCX",
        f"{SITE}/upload/c.xls",
    ]


def test_article_canonical_link_is_reported():
    fields = extract_article(article_page(EN, 10), f"{SITE}/news/", CSTO_SELECTORS)
    assert fields.canonical == url_of(EN.article(10))


# -- compiled selectors: the crawl's hot path must match what parsel selects -----------------

MIXED_PAGE = """<head><title>T</title><link rel="canonical" href="/news/a/"></head><body>
<div class="news-item first"><a class="news-title" href="/news/1/">One <b>bold</b></a>
<span class="news-date">01.02.2024</span><!-- a comment --><p class="news-preview">Lead
 <i>text</i> here</p></div>
<div class="NEWS-ITEM"><a class="news-title" href="/news/2/">Two</a></div>
<table><tr><td>cell</td></tr></table><p data-x="&lt;b&gt;">x</p></body>"""
EXPRESSIONS = [
    "div.news-item",
    ".news-item a.news-title::attr(href)",
    "a.news-title::text",
    ".news-preview",
    ".news-preview *::text",
    "link[rel=canonical]::attr(href)",
    "div:not(.first) a",
    "td",
    "p::attr(data-x)",
    "xpath://a/@href",
    "xpath://div[re:test(@class, 'news-\\w+')]//a/text()",
    "xpath://comment()",
    "xpath:count(//a)",
    "xpath:boolean(//table)",
    "xpath:string(//span)",
    "nothing-matches",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_compiled_matches_serialize_as_parsel_selects(expression: str) -> None:
    from scraper.extract import matches, select, serialized

    page = hand_written(MIXED_PAGE)
    assert [serialized(m) for m in matches(page, expression)] == select(page, expression).getall()


def parsel_text_of(nodes) -> str | None:
    """text_of as it was written on parsel Selectors, before the compiled path."""
    parts = []
    for node in nodes:
        value = node.get()
        if value and value.lstrip().startswith("<"):
            value = " ".join(node.xpath(".//text()").getall())
        parts.append(value or "")
    return normalize_whitespace(" ".join(parts)) or None


# The parsel-era text_of crashed on a comment and dropped a string value that starts with "<"
# (it took it for markup): both are specified by their own tests below.
@pytest.mark.parametrize(
    "expression", [e for e in EXPRESSIONS if e not in ("xpath://comment()", "p::attr(data-x)")]
)
def test_text_of_compiled_matches_equals_text_of_parsel_selection(expression: str) -> None:
    from scraper.extract import joined_text, matches, select

    page = hand_written(MIXED_PAGE)
    assert joined_text(matches(page, expression)) == parsel_text_of(select(page, expression))


def test_a_selected_comment_has_no_text() -> None:
    from scraper.extract import joined_text, matches

    assert joined_text(matches(hand_written(MIXED_PAGE), "xpath://comment()")) is None


def test_compiled_matches_select_inside_an_element_like_parsel() -> None:
    from scraper.extract import matches, select, serialized

    page = hand_written(MIXED_PAGE)
    items = matches(page, "div.news-item")
    nested = [serialized(m) for item in items for m in matches(item, "a::attr(href)")]
    assert nested == select(page, "div.news-item").css("a::attr(href)").getall() == ["/news/1/"]


def test_a_bad_xpath_is_a_value_error_as_in_parsel() -> None:
    from scraper.extract import matches

    with pytest.raises(ValueError, match="XPath error"):
        matches(hand_written(MIXED_PAGE), "xpath://a[unknown-function()]")


def test_a_string_value_that_starts_with_a_bracket_is_kept_as_text() -> None:
    from scraper.extract import joined_text, matches

    assert joined_text(matches(hand_written(MIXED_PAGE), "p::attr(data-x)")) == "<b>"


# -- the page tree: parsed once, the way parsel parses it --------------------------------------


def tree_pages() -> list[HtmlResponse]:
    pages = [served(EN, "/news/"), article_page(EN, 3), article_page(RU, 2)]
    pages.append(served(RU, "/ru/news/"))
    for body in [
        b"",
        b"   \n ",
        b"<!-- only a comment -->",
        b"text without tags",
        b"<p>a\x00b</p>",
        b"<?xml version='1.0' encoding='utf-8'?><html><body><p>x</p></body></html>",
        b"<html><head><base href='/other/'></head><body><a href='a'>A</a></body></html>",
        b"<table><tr><td>unclosed<p>para<li>item",
        "<meta charset='windows-1251'><p>Новости</p>".encode("cp1251"),
        b"\xef\xbb\xbf<p>with a byte order mark</p>",
    ]:
        pages.append(HtmlResponse(f"{SITE}/x/", body=body))
    return pages


@pytest.mark.parametrize("index", range(len(tree_pages())))
def test_page_root_is_the_tree_parsel_builds_for_the_response(index: int) -> None:
    from lxml import etree

    from scraper.extract import page_root

    page = tree_pages()[index]
    ours = etree.tostring(page_root(page), encoding="unicode")
    assert ours == etree.tostring(page.selector.root, encoding="unicode")


def test_page_root_parses_a_response_once() -> None:
    from scraper.extract import page_root

    page = article_page(EN, 4)
    assert page_root(page) is page_root(page)


@pytest.mark.parametrize(
    "item", ["div.news-item a::attr(href)", "xpath://div/@class", "xpath:count(//div)"]
)
def test_an_item_selector_that_matches_no_elements_falls_back_to_detection(item: str) -> None:
    selectors = Selectors(item=item, link="a::attr(href)", title="a::text")
    listing = extract_listing(served(EN, "/news/"), f"{SITE}/news/", selectors)
    assert listing.origin["item"] == "fallback"
    assert len(listing.entries) >= 10


def test_a_page_a_fallback_read_first_is_not_parsed_again() -> None:
    from scraper.extract import page_root

    page = article_page(EN, 5)
    parsed_by_a_fallback = page.selector.root
    assert page_root(page) is parsed_by_a_fallback


def test_an_automatic_listing_is_parsed_by_parsel_alone(monkeypatch) -> None:
    import scraper.extract as extract

    own_parses = []
    original = extract._parse_page
    monkeypatch.setattr(extract, "_parse_page", lambda r: own_parses.append(r) or original(r))
    items = "".join(f"<li><a href='news/s{n}/'>Ministers met for talks {n}</a></li>" for n in "123")
    page = hand_written(
        f"<base href='/'></head><body>{items}<a href='news/?PAGEN_1=2'>Next</a></body>",
        url=f"{SITE}/news/",
    )
    listing = extract_listing(page, page.url, NO_SELECTORS)
    assert listing.next_page == f"{SITE}/news/?PAGEN_1=2"
    assert own_parses == []  # the base came from parsel's tree, which detection reads anyway


# -- outside Scrapy (the page worker) --------------------------------------------------------------


@pytest.mark.parametrize("selectors", [CSTO_SELECTORS, NO_SELECTORS], ids=["configured", "none"])
@pytest.mark.parametrize("rep", [EN, RU], ids=["en", "ru"])
def test_an_html_page_outside_scrapy_extracts_as_its_response_does(
    rep: Replica, selectors: Selectors
) -> None:
    prefix = "/ru" if rep.language == "ru" else ""
    for response in (served(rep, f"{prefix}/news/"), served(rep, f"{prefix}/news/?PAGEN_1=2")):
        page = HtmlPage(response.url, response.text)
        assert extract_listing(page, response.url, selectors) == extract_listing(
            response, response.url, selectors
        )
    for article_id in (1, 7, rep.initial):
        response = article_page(rep, article_id)
        page = HtmlPage(response.url, response.text)
        assert extract_article(page, response.url, selectors) == extract_article(
            response, response.url, selectors
        )


ASCII_FALLBACK = HtmlResponse(  # encoding "ascii": the spider sends such a page as its text
    f"{SITE}/ru/news/news_odkb/x/",
    body="<html><body><h1>Caf\u00e9</h1><div class='news-detail-text'><p>Caf\u00e9 \u00ff</p>"
    "<p>06.04.2022</p></div></body></html>".encode("latin-1"),
    encoding="ascii",
)


@pytest.mark.parametrize(
    "response", [article_page(RU, 3), ASCII_FALLBACK], ids=["windows-1251", "ascii-fallback"]
)
def test_the_page_workers_reader_gives_the_item_the_spider_would_normalize(
    response: HtmlResponse,
) -> None:
    config = SourceConfig("csto-ru", (SITE + "/ru/news/",), "ru", CSTO_SELECTORS)
    response = response.replace(request=Request(response.url, meta={"canonical": response.url}))
    run = SimpleNamespace(name="csto-ru")
    validators = {"etag": None, "last_modified": None}
    here, origin = read_article(
        response, response.url, "csto-ru", config, response.meta, validators, "t"
    )
    page = {**_page(run, response), "fetched_at": "t"}
    there, there_origin = page_reader({"csto-ru": config})(page)
    assert there.normalized == normalize_article(here)
    assert there_origin == origin
    assert there.body_html is None  # the worker sends back only the normalized text
