"""Tests for storage.normalize: cases from data/normalize_cases.toml, then named behaviours."""

from __future__ import annotations

import logging
import random
import time
import tomllib
from pathlib import Path

import bs4
import pytest
from scrapy.http import HtmlResponse

from storage import normalize
from storage.normalize import (
    canonical_url,
    clean_content_hash,
    clean_text,
    content_hash,
    find_date,
    is_attachment,
    is_http_url,
    normalize_whitespace,
    parse_date,
    prefer_canonical,
    section_from_url,
)

CASES = tomllib.loads((Path(__file__).parent / "data" / "normalize_cases.toml").read_text("utf-8"))


def cases(table: str, *fields: str) -> list:
    """pytest params for one TOML table, with the case's id as the test id."""
    return [pytest.param(*(case.get(f) for f in fields), id=case["id"]) for case in CASES[table]]


# --------------------------------------------------------------------------------------------------
# Table-driven
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "base", "expected"), cases("canonical_url", "input", "base", "expected")
)
def test_canonical_url(url: str, base: str | None, expected: str) -> None:
    assert canonical_url(url, base=base) == expected


@pytest.mark.parametrize(
    ("url", "base", "expected"), cases("canonical_url", "input", "base", "expected")
)
def test_canonical_url_is_idempotent(url: str, base: str | None, expected: str) -> None:
    assert canonical_url(canonical_url(url, base=base)) == expected


@pytest.mark.parametrize(
    ("text", "languages", "expected"), cases("parse_date", "input", "languages", "expected")
)
def test_parse_date(text: str, languages: list[str] | None, expected: str) -> None:
    assert parse_date(text, languages) == expected


@pytest.mark.parametrize(("text", "languages"), cases("parse_date_none", "input", "languages"))
def test_parse_date_returns_none(text: str, languages: list[str] | None) -> None:
    assert parse_date(text, languages) is None


@pytest.mark.parametrize(("text", "expected"), cases("find_date", "input", "expected"))
def test_find_date(text: str, expected: str) -> None:
    assert find_date(text) == expected


@pytest.mark.parametrize("text", cases("find_date_none", "input"))
def test_find_date_returns_none(text: str) -> None:
    assert find_date(text) is None


def test_case_tables_cover_the_brief() -> None:
    assert len(CASES["canonical_url"]) >= 20
    ru_months = [
        c for c in CASES["parse_date"] if c["id"].startswith("ru-") and c["id"][3:].isalpha()
    ]
    assert len({c["expected"][5:7] for c in ru_months}) == 12


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------

ARTICLE = "https://en.odkb-csto.org/news/news_odkb/slug/"


def test_canonical_url_raises_on_unsplittable_url() -> None:
    with pytest.raises(ValueError):
        canonical_url("http://example.org:port/")


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        pytest.param(
            "https://en.odkb-csto.org/news/news_odkb/slug/?utm_source=x", ARTICLE, id="same-host"
        ),
        pytest.param(
            "https://www.en.odkb-csto.org/news/news_odkb/other/",
            "https://www.en.odkb-csto.org/news/news_odkb/other/",
            id="www-variant-is-same-host",
        ),
        pytest.param(
            "/news/news_odkb/real-slug/",
            "https://en.odkb-csto.org/news/news_odkb/real-slug/",
            id="relative-resolved-against-page",
        ),
        pytest.param("https://mirror.example.org/news/slug/", ARTICLE, id="other-host-ignored"),
        pytest.param("ftp://en.odkb-csto.org/news/slug/", ARTICLE, id="non-http-ignored"),
        pytest.param("https://en.odkb-csto.org/", ARTICLE, id="root-canonical-ignored"),
        pytest.param("http://en.odkb-csto.org:bad/x/", ARTICLE, id="malformed-ignored"),
        pytest.param(None, ARTICLE, id="none"),
        pytest.param("  ", ARTICLE, id="blank"),
    ],
)
def test_prefer_canonical(href: str | None, expected: str) -> None:
    assert prefer_canonical(ARTICLE + "#top", href) == expected


def test_prefer_canonical_accepts_root_for_root_page() -> None:
    page = "https://en.odkb-csto.org/index.php"
    assert prefer_canonical(page, "https://en.odkb-csto.org/") == "https://en.odkb-csto.org/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(ARTICLE, "news_odkb", id="csto-en"),
        pytest.param("https://odkb-csto.org/news/news_odkb/slug/", "news_odkb", id="csto-ru"),
        pytest.param("https://en.odkb-csto.org/news/news_odkb/slug", "news_odkb", id="no-slash"),
        pytest.param("https://example.org/en/news/world/slug/", "world", id="language-prefix"),
        pytest.param("https://example.org/blog/2024/05/x/", "blog", id="first-segment"),
        pytest.param("https://example.org/news/slug/", "news", id="article-directly-in-news"),
        pytest.param("https://example.org/news/detail.php?ID=5", "news", id="bitrix-detail"),
        pytest.param("https://example.org/slug/", None, id="top-level-article"),
        pytest.param("https://example.org/", None, id="root"),
        pytest.param("https://example.org", None, id="empty-path"),
    ],
)
def test_section_from_url(url: str, expected: str | None) -> None:
    assert section_from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        *(
            pytest.param(f"https://odkb-csto.org/upload/iblock/1/file.{ext}", True, id=ext)
            for ext in ("pdf", "doc", "docx", "xls", "xlsx", "rtf", "odt", "ppt", "pptx", "zip")
        ),
        pytest.param("https://odkb-csto.org/upload/Doc.PDF", True, id="upper-case"),
        pytest.param("https://odkb-csto.org/upload/a.pdf?download=1#p2", True, id="query-ignored"),
        pytest.param("/upload/%D0%B4%D0%BE%D0%BA.docx", True, id="relative-encoded"),
        pytest.param("https://odkb-csto.org/news/news_odkb/slug/", False, id="article"),
        pytest.param("https://odkb-csto.org/download.php?file=a.pdf", False, id="pdf-in-query"),
        pytest.param("https://odkb-csto.org/pdf/", False, id="pdf-directory"),
        pytest.param("https://odkb-csto.org/upload/image.jpg", False, id="image"),
    ],
)
def test_is_attachment(url: str, expected: bool) -> None:
    assert is_attachment(url) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://en.odkb-csto.org/news/", True, id="https"),
        pytest.param("HTTP://odkb-csto.org/", True, id="http-upper"),
        pytest.param(" https://odkb-csto.org/ ", True, id="whitespace"),
        pytest.param("file:///etc/passwd", False, id="file"),
        pytest.param("javascript:history.back()", False, id="javascript"),
        pytest.param("mailto:info@odkb-csto.org", False, id="mailto"),
        pytest.param("data:text/html,hi", False, id="data"),
        pytest.param("ftp://odkb-csto.org/a.pdf", False, id="ftp"),
        pytest.param("/news/", False, id="relative"),
        pytest.param("http:/news/", False, id="no-host"),
        pytest.param("http://[::1", False, id="broken-ipv6"),
        pytest.param("http://odkb-csto.org:port/", False, id="broken-port"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_http_url(url: str, expected: bool) -> None:
    assert is_http_url(url) is expected


# --------------------------------------------------------------------------------------------------
# Dates: behaviour beyond the tables
# --------------------------------------------------------------------------------------------------


def test_parse_date_none_input() -> None:
    assert parse_date(None) is None


def test_parse_date_logs_unparseable_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="storage.normalize"):
        assert parse_date("not a date at all") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "not a date at all" in caplog.text


def test_parse_date_numeric_fast_path_skips_dateparser(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(languages: tuple[str, ...]) -> None:
        raise AssertionError("dateparser used for a numeric date")

    monkeypatch.setattr(normalize, "_date_parser", boom)
    normalize._parse_date_cached.cache_clear()
    assert parse_date("07.11.2023") == "2023-11-07"
    assert parse_date("2023-11-07T09:00:00+03:00") == "2023-11-07T09:00:00+03:00"
    normalize._parse_date_cached.cache_clear()


def test_parse_date_does_not_depend_on_local_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    normalize._parse_date_cached.cache_clear()
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert parse_date("22 апреля 2024 г. 10:15") == "2024-04-22T10:15:00"
        assert parse_date("Tue, 23 Apr 2024 10:15:00 +0300") == "2024-04-23T10:15:00+03:00"
    finally:
        monkeypatch.undo()
        time.tzset()
        normalize._parse_date_cached.cache_clear()


@pytest.mark.parametrize("languages", [["ru-RU"], ["RU"], ["ru_RU", "en"], [" ru "]])
def test_parse_date_accepts_language_tags(languages: list[str]) -> None:
    assert parse_date("22 апреля 2024", languages) == "2024-04-22"


def test_parse_date_unknown_language_falls_back_to_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="storage.normalize"):
        assert parse_date("22 апреля 2024", languages=["xx"]) == "2024-04-22"
    assert "xx" in caplog.text


def test_find_date_none_input() -> None:
    assert find_date(None) is None


# --------------------------------------------------------------------------------------------------
# clean_text: one behaviour per test
# --------------------------------------------------------------------------------------------------


def test_clean_text_drops_scripts_and_styles() -> None:
    html = (
        "<div><script>var x = 'tracker';</script><style>p{color:red}</style>"
        "<noscript>Enable JS</noscript><p>Body text.</p><template><p>tpl</p></template>"
        "<svg><text>icon</text></svg><iframe src='x'></iframe></div>"
    )
    assert clean_text(html) == "Body text."


def test_clean_text_drops_forms_and_buttons() -> None:
    html = "<div><p>Body.</p><form><input name=q><button>Search</button></form></div>"
    assert clean_text(html) == "Body."


def test_clean_text_drops_comments() -> None:
    assert clean_text("<p>Body<!-- bitrix: cache hit -->.</p>") == "Body."


def test_clean_text_drops_share_widget() -> None:
    html = (
        "<div><p>Body.</p><div class='ya-share2' data-services='vk,telegram'><a>VK</a></div>"
        "<div class='news-detail-share'><span>Telegram</span></div>"
        "<ul class='social-links'><li>Twitter</li></ul></div>"
    )
    assert clean_text(html) == "Body."


@pytest.mark.parametrize(
    "html",
    [
        "<p><span class='share'>Share</span>Body text, after a widget.</p>",  # a first child
        "<p>Body <b>text</b><span class='share'>Share</span>, after a widget.</p>",  # after one
    ],
)
def test_clean_text_keeps_the_text_that_follows_a_dropped_element(html: str) -> None:
    assert clean_text(html) == "Body text, after a widget."


def test_clean_text_drops_latest_news_block_by_class() -> None:
    html = (
        "<main><div class='sidebar-last-news'><div>22.04.2024</div><p>Other lead.</p></div>"
        "<p>Body.</p><aside><p>Sidebar</p></aside><div class='news-list'><p>Item</p></div></main>"
    )
    assert clean_text(html) == "Body."


@pytest.mark.parametrize(
    "heading", ["Latest news", "Последние новости", "Другие новости", "Read also:", "ЧИТАЙТЕ ТАКЖЕ"]
)
def test_clean_text_drops_block_titled_latest_news(heading: str) -> None:
    html = (
        f"<main><div class='box'><div class='box-head'><h3>{heading}</h3></div>"
        "<ul><li>22.04.2024 Other lead.</li><li>18.04.2024 Another lead.</li></ul></div>"
        "<h1>Title</h1><p>Body.</p></main>"
    )
    assert clean_text(html) == "Title\n\nBody."


def test_clean_text_teaser_heading_inside_article_drops_only_its_section() -> None:
    html = (
        "<article><h2>Title</h2><p>Body one.</p><h3>Read also</h3><ul><li>Other</li></ul>"
        "<p>Teaser lead.</p><h3>Background</h3><p>Body two.</p></article>"
    )
    assert clean_text(html) == "Title\n\nBody one.\n\nBackground\n\nBody two."


def test_clean_text_teaser_heading_never_takes_the_article_wrapper() -> None:
    html = (
        "<main><div class='wrapper'><h2>Latest news</h2><p>Other lead.</p>"
        "<h1>Title</h1><p>Body.</p></div></main>"
    )
    assert clean_text(html) == "Title\n\nBody."


def test_clean_text_drops_back_links() -> None:
    html = (
        "<div><p>Body.</p><p><a href='javascript:history.back()'>Go back</a></p>"
        "<div class='nav-links'><a href='/news/news_odkb/'>Back to the section</a></div>"
        "<p><a href='/news/'>Back to the all news</a></p><p>« Back</p><p>Print</p></div>"
    )
    assert clean_text(html) == "Body."


def test_clean_text_drops_russian_back_links() -> None:
    html = (
        "<div><p>Текст новости.</p><p><a>Назад</a></p><p>Вернуться назад</p>"
        "<p>← Вернуться в раздел</p><p>Вернуться к списку</p><p><a>Все новости »</a></p>"
        "<p>Возврат к списку</p><p>Поделиться:</p><p>Версия для печати</p></div>"
    )
    assert clean_text(html) == "Текст новости."


def test_clean_text_drops_line_of_several_nav_phrases() -> None:
    html = "<p>Body.</p><p><a>← Back to news</a> | <a>Print</a> | <a>Share</a></p>"
    assert clean_text(html) == "Body."


def test_clean_text_keeps_nav_words_inside_sentences() -> None:
    html = "<p>Go back to the negotiating table, the Secretary General said.</p><p>Back</p>"
    assert clean_text(html) == "Go back to the negotiating table, the Secretary General said."


def test_clean_text_drops_breadcrumbs_and_pagination() -> None:
    html = (
        "<div><ul class='breadcrumbs'><li>Home</li><li>News</li></ul><nav>Menu</nav>"
        "<p>Body.</p><div class='modern-page-navigation'><a>1</a><a>2</a></div></div>"
    )
    assert clean_text(html) == "Body."


def test_clean_text_decodes_entities() -> None:
    html = "<p>&laquo;CSTO&raquo;&nbsp;&amp; UN &mdash; talks &#8470;&nbsp;5</p>"
    assert clean_text(html) == "«CSTO» & UN — talks № 5"


def test_clean_text_separates_paragraphs_with_one_blank_line() -> None:
    html = "<div>\n<p>One.</p>\n\n\n<div><p>Two.</p></div><h2>Three</h2><li>Four</li></div>"
    assert clean_text(html) == "One.\n\nTwo.\n\nThree\n\nFour"


def test_clean_text_br_breaks_paragraphs() -> None:
    html = "<p>Line one<br>line two<br/><br/>line three</p>"
    assert clean_text(html) == "Line one\n\nline two\n\nline three"


def test_clean_text_collapses_nbsp_and_zero_width() -> None:
    html = "<p>  Collective\u00a0\u00a0security \u200b treaty\u200b\t\n organisation </p>"
    assert clean_text(html) == "Collective security treaty organisation"


def test_clean_text_inline_elements_stay_in_paragraph() -> None:
    html = "<p>The <b>CSTO</b> <a href='/x/'>Secretariat</a>hosted<em>,</em> talks.</p>"
    assert clean_text(html) == "The CSTO Secretariathosted, talks."


def test_clean_text_table_row_is_a_paragraph() -> None:
    html = (
        "<table><tr><th>Country</th><th>Role</th></tr>"
        "<tr><td>Armenia</td><td>Member</td></tr></table>"
    )
    assert clean_text(html) == "Country Role\n\nArmenia Member"


def test_clean_text_accepts_tag_without_modifying_it() -> None:
    soup = bs4.BeautifulSoup("<div id='a'><script>x</script><p>Body.</p></div>", "lxml")
    tag = soup.find(id="a")
    before = str(tag)
    assert clean_text(tag) == "Body."
    assert str(tag) == before


def test_clean_text_custom_drop_selectors_replace_defaults() -> None:
    html = "<div><p>Body.</p><div class='share'>Kept</div><div class='ad'>Advert</div></div>"
    assert clean_text(html, drop_selectors=[".ad"]) == "Body.\n\nKept"


@pytest.mark.parametrize("html", [None, "", "  \n", "<div><script>x</script></div>"])
def test_clean_text_empty_input(html: str | None) -> None:
    assert clean_text(html) == ""


# A page shaped like the seed capture (tests/../shared/seeds/000_5b865f62c35cc4cc.txt).
SEED_TITLE = (
    "Consultations were held on international flights of the armed forces of the CSTO member States"
)
SEED_BODY = [
    "On April 5-6 in Moscow, on the basis of the CSTO Joint Staff, representatives of the "
    "concerned ministries and departments of the CSTO member States held consultations "
    "on the issue «On organization and conducting of flights (overflights)».",
    "Representatives of the concerned ministries and departments in the Republic of Armenia, the "
    "Republic of Belarus and the Republic of Kazakhstan participated in the consultations.",
    "In order to improve the CSTO regulatory legal framework, it was deemed advisable to propose a "
    "number of amendments to the Agreement on 10 December 2010.",
]
SEED_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{SEED_TITLE}</title>
<script>window.dataLayer = [];</script></head>
<body>
<header><nav><a href="/">Home</a> <a href="/news/">News</a></nav></header>
<main class="workarea">
  <div class="side-block">
    <h2 class="side-block__title">Latest news</h2>
    <div class="side-item"><div class="side-item__date">22.04.2024</div>
      <a href="/news/news_odkb/a/">On 22 April 2024, the CSTO Secretariat hosted a meeting.</a>
    </div>
    <div class="side-item"><div class="side-item__date">22.04.2024</div>
      <a href="/news/news_odkb/b/">From 22 to 26 April, this year, a training meeting.</a>
    </div>
    <div class="side-item"><div class="side-item__date">18.04.2024</div>
      <a href="/news/news_odkb/c/">The meeting was held in the city of Moscow.</a></div>
  </div>
  <h1>{SEED_TITLE}</h1>
  <div class="news-detail">
    <h3>{SEED_TITLE} <span class="news-date-time">06.04.2022</span></h3>
    <p>{SEED_BODY[0].replace("«", "&laquo;").replace("»", "&raquo;")}</p>
    <p>{SEED_BODY[1]}</p>
    <p>{SEED_BODY[2]}</p>
    <div class="ya-share2" data-services="vk,telegram,twitter"></div>
    <p><a href="javascript:history.back()">Go back</a></p>
    <p><a href="/news/news_odkb/">Back to the section</a></p>
    <p><a href="/news/">Back to the all news</a></p>
  </div>
</main>
<footer><p>© CSTO</p></footer>
</body></html>"""


def test_clean_text_seed_shaped_page_keeps_only_article() -> None:
    main = bs4.BeautifulSoup(SEED_PAGE, "lxml").find("main")
    # clean_text cannot know the title, so the h1 and the "title date" line stay; the teaser
    # block (dropped by its heading alone: no class matches) and the back links must not.
    assert clean_text(main).split("\n\n") == [SEED_TITLE, f"{SEED_TITLE} 06.04.2022", *SEED_BODY]


def test_clean_text_seed_shaped_article_body() -> None:
    body = bs4.BeautifulSoup(SEED_PAGE, "lxml").select_one(".news-detail")
    body.find("h3").decompose()  # what extract.py does once it has read title and date
    assert clean_text(body) == "\n\n".join(SEED_BODY)


def test_seed_shaped_page_date_found_in_title_line() -> None:
    main = bs4.BeautifulSoup(SEED_PAGE, "lxml").find("main")
    assert find_date(clean_text(main).split("\n\n")[1]) == "2022-04-06"


# --------------------------------------------------------------------------------------------------
# Encoding: Scrapy decodes windows-1251 pages before clean_text sees them
# --------------------------------------------------------------------------------------------------

RU_TITLE = "Заседание Совета министров иностранных дел ОДКБ"
RU_BODY = "В Минске состоялось заседание «Совета» — обсуждены вопросы коллективной безопасности."
RU_PAGE = (
    "<html><head>{meta}<title>" + RU_TITLE + "</title></head>"
    "<body><h1>" + RU_TITLE + "</h1><p>" + RU_BODY + "</p><p><a>Назад</a></p></body></html>"
)


def _check_cp1251_response(response: HtmlResponse) -> None:
    assert response.encoding in {"cp1251", "windows-1251"}
    assert response.css("title::text").get() == RU_TITLE
    assert RU_TITLE in response.text
    assert clean_text(response.css("body").get()) == f"{RU_TITLE}\n\n{RU_BODY}"


def test_windows_1251_from_content_type_header() -> None:
    body = RU_PAGE.format(meta="").encode("cp1251")
    response = HtmlResponse(
        "https://odkb-csto.org/news/news_odkb/slug/",
        body=body,
        headers={"Content-Type": "text/html; charset=windows-1251"},
    )
    _check_cp1251_response(response)


def test_windows_1251_from_meta_charset_only() -> None:
    body = RU_PAGE.format(meta='<meta charset="windows-1251">').encode("cp1251")
    response = HtmlResponse("https://odkb-csto.org/news/news_odkb/slug/", body=body)
    _check_cp1251_response(response)


# --------------------------------------------------------------------------------------------------
# Whitespace and hashing
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("  a \t b\n\nc  ", "a b c", id="runs"),
        pytest.param("a\u00a0\u00a0b\u202fc\u3000d", "a b c d", id="unicode-spaces"),
        pytest.param(
            "zero\u200bwidth\ufeff soft\u00adhyphen", "zerowidth softhyphen", id="invisible"
        ),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="none"),
    ],
)
def test_normalize_whitespace(text: str | None, expected: str) -> None:
    assert normalize_whitespace(text) == expected


BODY = "First paragraph of the news.\n\nSecond paragraph, with a comma."


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            "First paragraph of the news.\r\n\r\nSecond paragraph, with a comma.", id="crlf"
        ),
        pytest.param(
            "  First  paragraph\nof the news. \n \n\n Second\u00a0paragraph, with a comma.\n",
            id="spaces",
        ),
        pytest.param(
            "First paragraph of the news.\n\n\n\nSecond paragraph, with a comma.", id="blank-lines"
        ),
    ],
)
def test_content_hash_stable_across_whitespace(body: str) -> None:
    assert content_hash(" Title\u00a0here ", body) == content_hash("Title here", BODY)


@pytest.mark.parametrize(
    ("title", "body"),
    [
        pytest.param("Title here", BODY.replace("comma", "colon"), id="word-changed"),
        pytest.param("Title there", BODY, id="title-changed"),
        pytest.param("Title here", BODY.replace("\n\n", " "), id="paragraphs-merged"),
        pytest.param(
            "Title here First paragraph of the news.",
            "Second paragraph, with a comma.",
            id="title-body-boundary",
        ),
    ],
)
def test_content_hash_changes_with_content(title: str, body: str) -> None:
    assert content_hash(title, body) != content_hash("Title here", BODY)


def test_content_hash_is_sha256_hex_and_accepts_none() -> None:
    digest = content_hash(None, None)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == content_hash("", "  \n ")


def test_content_hash_of_clean_text_ignores_markup_whitespace() -> None:
    a = clean_text("<p>One\n two</p><p>Three</p>")
    b = clean_text("<div>\n  <p>One two</p>\n\n  <p>Three</p>\n</div>")
    assert content_hash("T", a) == content_hash("T", b)


def test_clean_text_whole_document_skips_head_and_form_controls() -> None:
    html = (
        "<html><head><title>Page title</title><meta name='x' content='y'></head>"
        "<body><select><option>2024</option></select><p>Body.</p></body></html>"
    )
    assert clean_text(html) == "Body."


# -- fast paths agree with the general ones -------------------------------------------------------

INVISIBLE = "\u200b\u2060\ufeff\u00ad"


def random_texts(count: int, alphabet: str, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(count)]


def test_normalize_whitespace_collapses_every_unicode_space_run_and_drops_invisibles() -> None:
    alphabet = "ab  \t\n\r\x0b\x0c\xa0\u2009\u3000\x1c\x85" + INVISIBLE
    for text in random_texts(5000, alphabet):
        expected = " ".join("".join(c for c in text if c not in INVISIBLE).split())
        assert normalize_whitespace(text) == expected, repr(text)


def generated_urls() -> list[str]:
    """7,000 URLs mixing canonical and non-canonical spellings of paths, hosts and queries."""
    rng = random.Random(11)
    pieces = [
        "a",
        "Z",
        "0",
        "-",
        ".",
        "..",
        "/",
        "//",
        "%41",
        "%7e",
        "%",
        "?",
        "#",
        "~",
        "'",
        "@",
        ":",
        "index.php",
        "Index.HTML",
        "utm_x=1",
        "&",
        "=",
        " ",
        "é",
        "_",
        "!",
        "+",
    ]
    hosts = [
        "example.org",
        "Example.org",
        "a-b.example.org",
        "example.org.",
        "example.org:443",
        "example.org:8080",
        "xn--80ak6aa92e.com",
        "-bad.org",
        "127.0.0.1:80",
        "127.0.0.1:8765",
        "h:0",
        "h:08765",
        "h:65535",
        "h:65536",
        "h:99999",
        "127.0.0.1",
    ]
    urls = [
        f"{rng.choice(['http', 'https', 'HTTP'])}://{rng.choice(hosts)}/"
        + "".join(rng.choices(pieces, k=rng.randint(0, 8)))
        for _ in range(5000)
    ]
    pairs = ["a=1", "B=x.y", "utm_x=1", "UTM_Y=2", "sphrase_id=5", "fbclid=", "&", "=", "b", "~"]
    pairs += ["%41=1", "a+b=1", "a=%7e", "c=é", "d= ", "e=1#f", "PAGEN_1=2"]
    urls += [
        f"http://{rng.choice(hosts)}/news/a/?" + "".join(rng.choices(pairs, k=rng.randint(0, 5)))
        for _ in range(2000)
    ]
    return urls


def test_canonical_url_fast_path_returns_what_the_full_canonicalization_returns() -> None:
    urls = generated_urls()
    fast = [url for url in urls if normalize._IS_CANONICAL_RE.fullmatch(url)]
    assert len(fast) > 300  # the comparison covers the fast path, not just the slow one
    assert sum("?" in url for url in fast) > 300  # queries too, tracking parameters among them
    assert sum("utm_x" in url.lower() for url in fast) > 50
    for url in urls:
        try:
            expected = normalize._canonicalize(url, None)
        except ValueError:
            continue
        assert canonical_url(url) == expected, url


def test_path_segments_fast_path_returns_what_parsing_the_url_returns() -> None:
    urls = generated_urls()
    assert sum(bool(normalize._IS_CANONICAL_RE.fullmatch(url)) for url in urls) > 300
    for url in urls:
        try:
            expected = normalize._parsed_path_segments(url)
        except ValueError:
            continue
        assert normalize._path_segments(url) == expected, url


def test_clean_content_hash_equals_content_hash_of_clean_text() -> None:
    alphabet = "ab \t\n\r\xa0<>/p" + INVISIBLE
    for text in random_texts(2000, alphabet, seed=3):
        html = f"<div><p>{text}</p><p> {text[::-1]} </p><br>{text}</div>"
        title = normalize_whitespace(text[:10])
        body = clean_text(html)
        assert clean_content_hash(title, body) == content_hash(text[:10], body), repr(text)


def random_page(rng: random.Random, depth: int = 0) -> str:
    tags = ["div", "p", "span", "nav", "aside", "section", "h2", "ul", "li", "b", "rt"]
    classes = ["", "share", "share-buttons", "xshare", "Share", "social", "news-list", "keep",
               "latest-news", "a b", "pre-x", "c", "breadcrumbs"]  # fmt: skip
    parts = []
    for _ in range(rng.randint(1, 4)):
        if depth < 4 and rng.random() < 0.7:
            tag, cls = rng.choice(tags), rng.choice(classes)
            ident = ' id="id1"' if rng.random() < 0.05 else ""
            inner = random_page(rng, depth + 1)
            parts.append(f'<{tag} class="{cls}"{ident}>{rng.choice(["", "w", "Latest news"])}'
                         f"{inner}</{tag}>")  # fmt: skip
        parts.append(rng.choice(["", " text ", "more words", "\n"]))
    return "".join(parts)


@pytest.mark.parametrize(
    "selectors",
    [
        normalize.DEFAULT_DROP_SELECTORS,
        ("div.a > p", ".a.b", "[class~=c]", "[class^=pre]", "section", "p:not(.keep)", "#id1"),
        ("nav, .keep", "div span", "[class*=Share i]", "*", "li:first-child"),
    ],
)
def test_drop_selectors_skipped_by_class_lookup_drop_what_the_full_selector_drops(
    selectors: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(23)
    pages = [random_page(rng) for _ in range(400)]
    fast = [clean_text(page, selectors) for page in pages]
    normalize._noise_plan.cache_clear()
    monkeypatch.setattr(normalize, "_noise_plan", lambda given: ((), (), tuple(given)))
    assert fast == [clean_text(page, selectors) for page in pages]
