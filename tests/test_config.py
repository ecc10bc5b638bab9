"""The TOML config as a contract: defaults, a full valid file, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import CSTO_SELECTORS, ConfigError, load_config

SOURCE = """
[[sources]]
name = "csto-en"
start_urls = ["https://en.odkb-csto.org/news/"]
"""

FULL_CONFIG = """
database = "archive/news.db"

[[sources]]
name = "csto-en"
start_urls = ["https://en.odkb-csto.org/news/", "https://en.odkb-csto.org/news/news_odkb/"]
language = "en"
revisit_days = 5
revisit_every = "1h30m"
max_pages = 4
max_failures = 2
[sources.selectors]
item = "div.news-item"
link = "a::attr(href)"
title = "a::text"
date = ".news-date::text"
summary = ".news-preview"
next_page = "a.next::attr(href)"
article_title = "h1::text"
article_date = "xpath://span[@class='news-date-time']/text()"
article_body = ".news-detail"

[[sources]]
name = "csto-ru"
start_urls = ["https://odkb-csto.org/news/"]
language = "ru"

[[alerts]]
type = "jsonl"
path = "alerts.jsonl"
sources = ["csto-ru"]

[schedule]
every = "15m"

[settings]
DOWNLOAD_DELAY = 2
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsmon.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and a valid file ---------------------------------------------------------------------


def test_without_a_config_file_the_sources_are_the_csto_sections(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.path is None
    assert [(s.name, s.start_urls, s.language) for s in config.sources] == [
        ("csto-en", ("https://en.odkb-csto.org/news/",), "en"),
        ("csto-ru", ("https://odkb-csto.org/news/",), "ru"),
    ]


def test_without_a_config_file_the_database_is_newsmon_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config().database == Path("newsmon.db")


def test_db_option_overrides_the_default_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(database=tmp_path / "x.db").database == tmp_path / "x.db"


def test_built_in_sources_use_the_csto_selectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert all(source.selectors == CSTO_SELECTORS for source in load_config().sources)


def test_an_explicit_config_path_that_does_not_exist_is_an_error(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_config(missing)


def test_a_full_valid_config_parses_every_key(tmp_path):
    config = load_config(write_config(tmp_path, FULL_CONFIG))
    en, ru = config.sources
    assert config.database == tmp_path / "archive" / "news.db"
    assert en.name == "csto-en"
    assert en.start_urls == (
        "https://en.odkb-csto.org/news/",
        "https://en.odkb-csto.org/news/news_odkb/",
    )
    assert (en.language, en.revisit_days, en.revisit_every) == ("en", 5.0, 5400.0)
    assert (en.max_pages, en.max_failures) == (4, 2)
    assert en.selectors.item == "div.news-item"
    assert en.selectors.article_date == "xpath://span[@class='news-date-time']/text()"
    assert en.selectors.article_body == ".news-detail"
    assert (ru.name, ru.language, ru.start_urls) == (
        "csto-ru",
        "ru",
        ("https://odkb-csto.org/news/",),
    )
    assert ru.selectors.configured() == {}
    assert config.alerts[0]["type"] == "jsonl"
    assert config.schedule.every == 900.0
    assert config.settings == {"DOWNLOAD_DELAY": 2}


def test_a_relative_database_is_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    config = load_config(write_config(tmp_path, 'database = "news.db"\n' + SOURCE))
    assert config.database == tmp_path / "news.db"


# -- mistakes: one ConfigError line naming the file, the block and the key -------------------------

ERROR_CASES = [
    pytest.param(
        'colour = "blue"\n' + SOURCE,
        ["'colour'"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        SOURCE + 'colour = "red"\n',
        ["'csto-en'", "'colour'"],
        id="unknown-source-key",
    ),
    pytest.param(
        '[[sources]]\nname = "csto-en"\nstart_urls = 5\n',
        ["'csto-en'", "'start_urls'"],
        id="start-urls-is-an-int",
    ),
    pytest.param(
        SOURCE + 'revisit_days = "3"\n',
        ["'csto-en'", "'revisit_days'"],
        id="revisit-days-is-a-string",
    ),
    pytest.param(
        SOURCE + "max_pages = 0\n",
        ["'csto-en'", "'max_pages'"],
        id="max-pages-below-one",
    ),
    pytest.param(
        "database = 5\n" + SOURCE,
        ["'database'"],
        id="database-is-an-int",
    ),
    pytest.param(
        SOURCE + '[sources.selectors]\nitem = "div[class="\n',
        ["'csto-en'", "'item'"],
        id="invalid-css-selector",
    ),
    pytest.param(
        SOURCE + '[sources.selectors]\narticle_body = "xpath://div[@class="\n',
        ["'csto-en'", "'article_body'"],
        id="invalid-xpath-selector",
    ),
    pytest.param(
        SOURCE + '[sources.selectors]\narticle_body = "xpath://div[\\n@class="\n',
        ["'csto-en'", "'article_body'"],
        id="invalid-xpath-selector-spanning-two-lines",
    ),
    pytest.param(
        SOURCE + '[sources.selectors]\nheadline = "h1::text"\n',
        ["'csto-en'", "'headline'"],
        id="unknown-selector-key",
    ),
    pytest.param(
        '[[sources]]\nname = "local"\nstart_urls = ["file:///etc/passwd"]\n',
        ["'local'", "'start_urls'", "file:///etc/passwd"],
        id="file-start-url",
    ),
    pytest.param(
        '[[sources]]\nname = "local"\nstart_urls = ["javascript:alert(1)"]\n',
        ["'local'", "'start_urls'", "javascript:alert(1)"],
        id="javascript-start-url",
    ),
    pytest.param(
        '[[sources]]\nname = "csto-en\nstart_urls = []\n',
        ["TOML", "line 2"],
        id="invalid-toml",
    ),
    pytest.param(
        SOURCE + SOURCE,
        ["'csto-en'", "'name'"],
        id="duplicate-source-names",
    ),
    pytest.param(
        SOURCE + 'revisit_every = "soon"\n',
        ["'csto-en'", "'revisit_every'", "soon"],
        id="bad-revisit-every-duration",
    ),
    pytest.param(
        SOURCE + '[schedule]\ncron = "61 * * * *"\n',
        ["schedule", "'cron'", "61 * * * *"],
        id="cron-minute-61",
    ),
    pytest.param(
        SOURCE + '[schedule]\nevery = "0s"\n',
        ["schedule", "'every'"],
        id="every-zero-seconds",
    ),
    pytest.param(
        SOURCE + '[[alerts]]\ntype = "pager"\n',
        ["alerts[0]", "type", "'pager'"],
        id="unknown-alert-type",
    ),
]


@pytest.mark.parametrize(("text", "fragments"), ERROR_CASES)
def test_a_config_mistake_is_one_line_naming_file_block_and_key(tmp_path, text, fragments):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    for fragment in fragments:
        assert fragment in message


# -- through the real CLI --------------------------------------------------------------------------

BROKEN_CONFIGS = [
    pytest.param('[[sources]]\nname = "csto-en\n', id="invalid-toml"),
    pytest.param(SOURCE + 'colour = "red"\n', id="unknown-source-key"),
    pytest.param(SOURCE + '[sources.selectors]\nitem = "div[class="\n', id="invalid-selector"),
]


@pytest.mark.parametrize("text", BROKEN_CONFIGS)
def test_cli_reports_a_broken_config_in_one_line_with_exit_2(workspace, text):
    workspace.write_config(text)
    result = workspace.run("crawl")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:")
    assert "newsmon.toml" in lines[0]
