"""Behaviour of the local CSTO replica, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gc
import html
import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from datetime import date
from email.message import Message

import pytest

from monitor.replica import HOSTILE_TITLE, FaultPlan, Replica, ReplicaServer
from tests.conftest import wait_for


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirect faults point off-site; the tests look at the 302 itself."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def control(server: ReplicaServer, name: str, payload: object = None) -> tuple[int, object]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
    request = urllib.request.Request(f"{server.base_url}/_replica/{name}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def listed_ids(body: bytes) -> list[int]:
    """Article ids of the listing's title links, in page order (the pinned one included)."""
    return [int(i) for i in re.findall(rb'class="news-title" href="[^"]*-(\d+)/', body)]


def pinned_ids(body: bytes) -> list[int]:
    found = re.findall(rb'news-item-pinned">\s*<span[^>]*>[^<]*</span>\s*<a[^>]*-(\d+)/', body)
    return [int(i) for i in found]


def article_url(server: ReplicaServer, replica: Replica, article_id: int) -> str:
    return f"{server.base_url}/news/news_odkb/{replica.article(article_id).slug}/"


@pytest.fixture
def server():
    with ReplicaServer() as srv:
        yield srv


# -- listings -------------------------------------------------------------------------------------
def test_listing_pages_run_newest_first(server):
    pages = [listed_ids(fetch(f"{server.en_url}?PAGEN_1={n}")[2]) for n in (1, 2, 3)]
    assert pages[0][1:] == list(range(30, 20, -1))
    assert pages[1] == list(range(20, 10, -1))
    assert pages[2] == list(range(10, 0, -1))
    assert fetch(server.en_url)[2] == fetch(f"{server.en_url}?PAGEN_1=1")[2]


def test_next_link_on_every_page_but_the_last(server):
    bodies = [fetch(f"{server.en_url}?PAGEN_1={n}")[2] for n in (1, 2, 3)]
    assert b'class="modern-page-next" href="/news/?PAGEN_1=2"' in bodies[0]
    assert b'class="modern-page-previous" href="/news/?PAGEN_1=1"' in bodies[1]
    assert b'<span class="modern-page-current">2</span>' in bodies[1]
    assert b"modern-page-next" not in bodies[2]


@pytest.mark.parametrize("wanted, same_as", [("99", "3"), ("4", "3"), ("0", "1"), ("-2", "1")])
def test_out_of_range_page_repeats_an_edge_page(server, wanted, same_as):
    status, _, body = fetch(f"{server.en_url}?PAGEN_1={wanted}")
    assert status == 200
    assert body == fetch(f"{server.en_url}?PAGEN_1={same_as}")[2]


def test_pinned_oldest_article_only_on_page_one(server):
    first = fetch(server.en_url)[2]
    assert pinned_ids(first) == [1] and listed_ids(first)[0] == 1
    assert b"news-item-pinned" not in fetch(f"{server.en_url}?PAGEN_1=2")[2]
    assert listed_ids(fetch(f"{server.en_url}?PAGEN_1=3")[2])[-1] == 1  # also in its place


def test_pinned_can_be_turned_off():
    with ReplicaServer(Replica(pinned=False)) as srv:
        assert b"news-item-pinned" not in fetch(srv.en_url)[2]


def test_every_fifth_link_carries_sphrase_id(server):
    body = fetch(f"{server.en_url}?PAGEN_1=2")[2]
    links = re.findall(rb'class="news-title" href="([^"]*-(\d+)/[^"]*)"', body)
    assert len(links) == 10
    for href, raw_id in links:
        assert (b"?sphrase_id=" in href) == (int(raw_id) % 5 == 0)
    href15 = next(href for href, raw_id in links if raw_id == b"15")
    assert fetch(server.base_url + href15.decode())[0] == 200


# -- article pages --------------------------------------------------------------------------------
def test_article_page_has_latest_news_and_back_links(server):
    url = article_url(server, server.replica_en, 12)
    status, _, body = fetch(url)
    text = body.decode()
    title = html.escape(server.replica_en.article(12).title)
    assert status == 200
    assert text.count('class="latest-news-item"') == 3
    assert f"<h1>{title}</h1>" in text and f'news-detail-title">{title}</h3>' in text
    assert f'<link rel="canonical" href="{url}">' in text
    assert ">Go back</a>" in text and ">Back to the section</a>" in text
    assert ">Back to the all news</a>" in text
    assert "&laquo;" in text and "&amp;" in text and "&nbsp;" in text


def test_latest_news_skips_the_article_itself(server):
    body = fetch(article_url(server, server.replica_en, 30))[2]
    latest = re.findall(rb'latest-news-item">.*?href="[^"]*-(\d+)/"', body)
    assert [int(i) for i in latest] == [29, 28, 27]


def test_scripts_and_attachments_on_their_articles(server):
    body28 = fetch(article_url(server, server.replica_en, 28))[2]
    body27 = fetch(article_url(server, server.replica_en, 27))[2]
    assert b'<script>var x = "tracking";</script>' in body28 and b"<style>" in body28
    assert b'<div class="news-files"><a href="/files/statement-28.pdf">' in body28
    assert b"<script>" not in body27 and b"news-files" not in body27
    status, headers, pdf = fetch(server.base_url + "/files/statement-28.pdf")
    assert status == 200 and headers["Content-Type"] == "application/pdf"
    assert pdf.startswith(b"%PDF")


MISSING = ["/news/news_odkb/nothing-999/", "/news/news_odkb/wrong-5/", "/documents/", "/news/x/"]


@pytest.mark.parametrize("path", MISSING)
def test_unknown_pages_answer_404(server, path):
    status, _, body = fetch(server.base_url + path)
    assert status == 404 and b"Page not found" in body


def test_robots_and_home_page(server):
    status, headers, body = fetch(server.base_url + "/robots.txt")
    assert status == 200 and body == b"User-agent: *\nDisallow: /search/\n"
    assert headers["Content-Type"].startswith("text/plain")
    home = fetch(server.base_url + "/")[2]
    assert b'href="/news/"' in home and b'href="/ru/news/"' in home


def test_generation_is_deterministic_and_dated_backwards():
    one, again, other = Replica(seed=1), Replica(seed=1), Replica(seed=2)
    assert one.articles() == again.articles()
    assert [a.title for a in one.articles()] != [a.title for a in other.articles()]
    dates = [a.published for a in one.articles()]
    assert dates[0] == date(2024, 4, 22) and dates == sorted(dates, reverse=True)
    assert dates[-1] == one.article(1).published and 20 <= (dates[0] - dates[-1]).days <= 35
    assert one.article(1).slug.endswith("-1")


def test_large_replica_starts_fast_and_serves_both_ends():
    began = time.perf_counter()
    with ReplicaServer(Replica(articles=100_000)) as srv:
        assert time.perf_counter() - began < 1.0
        assert listed_ids(fetch(srv.en_url)[2])[1] == 100_000
        assert listed_ids(fetch(f"{srv.en_url}?PAGEN_1=10000")[2]) == list(range(10, 0, -1))
        assert listed_ids(fetch(f"{srv.en_url}?PAGEN_1=999999")[2])[-1] == 1
    assert time.perf_counter() - began < 5.0


# -- changes --------------------------------------------------------------------------------------
def test_publish_puts_the_article_on_top(server):
    article = server.replica_en.publish(title="Extraordinary session of the Collective Council")
    assert article.id == 31 and article.slug == "extraordinary-session-of-collective-council-31"
    assert listed_ids(fetch(server.en_url)[2])[:2] == [1, 31]
    assert b"Extraordinary session" in fetch(article_url(server, server.replica_en, 31))[2]


def test_edit_changes_the_page_but_not_the_slug(server):
    before = server.replica_en.article(5)
    after = server.replica_en.edit(5, title="Edited title", body="First paragraph.\n\nSecond one.")
    assert after.slug == before.slug and after.paragraphs == ["First paragraph.", "Second one."]
    body = fetch(article_url(server, server.replica_en, 5))[2]
    assert b"<h1>Edited title</h1>" in body and b"<p>Second one.</p>" in body


def test_delete_gives_404_and_leaves_listings(server):
    url = article_url(server, server.replica_en, 30)
    server.replica_en.delete(30)
    assert fetch(url)[0] == 404
    assert listed_ids(fetch(server.en_url)[2])[1] == 29
    assert 30 not in [a.id for a in server.replica_en.articles()]
    assert server.replica_en.article(30).deleted


def test_control_endpoints_publish_edit_delete(server):
    status, made = control(server, "publish", {"title": "Via control", "body": "Line one."})
    assert status == 200 and made["id"] == 31 and made["lead"] == "Line one."
    assert b"Via control" in fetch(made["url"])[2]
    status, edited = control(server, "edit", {"id": 31, "title": "Changed via control"})
    assert status == 200 and b"Changed via control" in fetch(made["url"])[2]
    assert control(server, "delete", {"id": 31}) == (200, {"ok": True, "id": 31})
    assert fetch(made["url"])[0] == 404


def test_control_publish_in_russian(server):
    status, made = control(server, "publish", {"title": "Заявление", "language": "ru"})
    assert status == 200 and made["url"].startswith(server.ru_url)
    assert "Заявление" in fetch(made["url"])[2].decode("windows-1251")


BAD_COMMANDS = [
    ("edit", {"id": 999}, 404),
    ("delete", {}, 400),
    ("publish", b"{not json", 400),
    ("publish", {"language": "de"}, 400),
    ("explode", {}, 404),
]


@pytest.mark.parametrize("name, payload, expected", BAD_COMMANDS)
def test_control_errors(server, name, payload, expected):
    assert control(server, name, payload)[0] == expected


def test_request_log_skips_control_paths_and_resets(server):
    fetch(server.en_url)
    fetch(server.base_url + "/news/news_odkb/nothing-1000/")
    fetch(server.ru_url)
    control(server, "fault", {"path": "/robots.txt", "kind": "empty", "times": 1})
    assert server.replica_en.requests == [
        ("GET", "/news/", 200),
        ("GET", "/news/news_odkb/nothing-1000/", 404),
    ]
    with urllib.request.urlopen(server.base_url + "/_replica/requests") as resp:
        assert json.loads(resp.read())[-1] == ["GET", "/ru/news/", 200]
    control(server, "reset-requests")
    assert server.replica_en.requests == [] and server.replica_ru.requests == []


# -- conditional requests -------------------------------------------------------------------------
def test_if_none_match_gives_304(server):
    _, headers, _ = fetch(server.en_url)
    status, _, body = fetch(server.en_url, {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""


def test_if_modified_since_gives_304_on_article(server):
    url = article_url(server, server.replica_en, 10)
    _, headers, _ = fetch(url)
    status, _, _ = fetch(url, {"If-Modified-Since": headers["Last-Modified"]})
    assert status == 304


def test_publish_changes_validators(server):
    _, before, _ = fetch(server.en_url)
    server.replica_en.publish()
    status, after, _ = fetch(server.en_url, {"If-None-Match": before["ETag"]})
    assert status == 200 and after["ETag"] != before["ETag"]
    assert fetch(server.en_url, {"If-Modified-Since": before["Last-Modified"]})[0] == 200


def test_old_article_page_unaffected_by_unrelated_edit(server):
    url = article_url(server, server.replica_en, 10)
    _, headers, _ = fetch(url)
    server.replica_en.edit(2, title="Somewhere else")
    assert fetch(url, {"If-Modified-Since": headers["Last-Modified"]})[0] == 304


def test_conditional_support_can_be_turned_off():
    with ReplicaServer(Replica(conditional=False)) as srv:
        status, headers, _ = fetch(srv.en_url, {"If-None-Match": "*"})
        assert status == 200 and "ETag" not in headers and "Last-Modified" not in headers


# -- Russian --------------------------------------------------------------------------------------
def test_russian_listing_is_windows_1251(server):
    _, headers, body = fetch(server.ru_url)
    assert headers["Content-Type"] == "text/html; charset=windows-1251"
    text = body.decode("windows-1251")
    assert '<html lang="ru">' in text and "charset=windows-1251" in text
    assert "<h1>Новости</h1>" in text and re.search(r"[А-Яа-я]{5}", text)
    assert re.findall(r'news-date">([^<]*)<', text)[0] == "29.03.2024"


def test_russian_article_labels_and_dates_in_words(server):
    ru = server.replica_ru
    text = fetch(f"{server.ru_url}news_odkb/{ru.article(30).slug}/")[2].decode("windows-1251")
    assert "Последние новости" in text and "Вернуться в раздел" in text
    assert "Все новости" in text and "Поделиться" in text
    assert '<span class="news-date-time">22 апреля 2024</span>' in text
    other = fetch(f"{server.ru_url}news_odkb/{ru.article(29).slug}/")[2].decode("windows-1251")
    assert '<span class="news-date-time">21.04.2024</span>' in other


# -- faults ---------------------------------------------------------------------------------------
def test_fault_status_with_retry_after_runs_out(server):
    server.replica_en.faults.add(path="/news/", kind="status", code=503, retry_after=7, times=1)
    status, headers, _ = fetch(server.en_url)
    assert status == 503 and headers["Retry-After"] == "7"
    assert fetch(server.en_url)[0] == 200
    assert [r[2] for r in server.replica_en.requests] == [503, 200]


def test_fault_delay(server):
    server.replica_en.faults.add(path="/news/", kind="delay", seconds=0.4)
    began = time.perf_counter()
    assert fetch(server.en_url)[0] == 200
    assert time.perf_counter() - began >= 0.4


def test_fault_hold_keeps_requests_waiting_until_the_faults_are_cleared(server):
    server.replica_en.faults.add(path="/news/", kind="hold")
    answers: list[int] = []
    waiting = threading.Thread(target=lambda: answers.append(fetch(server.en_url)[0]))
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and answers == []
    assert control(server, "clear-faults")[0] == 200
    waiting.join(timeout=10)
    assert answers == [200]


def test_fault_truncate(server):
    server.replica_en.faults.add(path="/news/", kind="truncate", bytes=100)
    with (
        urllib.request.urlopen(server.en_url) as resp,
        pytest.raises(http.client.IncompleteRead) as info,
    ):
        resp.read()
    assert len(info.value.partial) == 100


def test_fault_garbage(server):
    server.replica_en.faults.add(path="/news/", kind="garbage", bytes=512)
    status, headers, body = fetch(server.en_url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert len(body) == 512 and b"news-list" not in body


def test_fault_empty(server):
    server.replica_en.faults.add(path="/news/", kind="empty")
    assert fetch(server.en_url)[::2] == (200, b"")


def test_fault_oversize_streams_exact_size(server):
    server.replica_en.faults.add(path="/news/", kind="oversize", bytes=3_000_000)
    status, headers, body = fetch(server.en_url)
    assert status == 200 and headers["Content-Length"] == "3000000"
    assert len(body) == 3_000_000 and body.startswith(b"<!DOCTYPE html>")


def test_fault_redirect_off_site(server):
    server.replica_en.faults.add(
        path="/news/", kind="redirect", location="http://example.invalid/x"
    )
    status, headers, _ = fetch(server.en_url)
    assert status == 302 and headers["Location"] == "http://example.invalid/x"


def test_fault_content_type(server):
    server.replica_en.faults.add(path="/news/", kind="content_type")
    _, headers, body = fetch(server.en_url)
    assert headers["Content-Type"] == "application/octet-stream" and b"news-list" in body


def test_fault_hostile_title_is_escaped_markup(server):
    url = article_url(server, server.replica_en, 9)
    server.replica_en.faults.add(path=url.removeprefix(server.base_url), kind="hostile")
    body = fetch(url)[2].decode()
    assert "<script>alert(1)</script>" not in body
    heading = re.search(r"<h1>(.*?)</h1>", body, re.S)
    assert heading and html.unescape(heading[1]) == HOSTILE_TITLE


def test_fault_exact_path_and_first_rule_wins(server):
    faults = server.replica_en.faults
    faults.add(path="/news/", kind="status", code=500, exact=True)
    faults.add(path="/news/", kind="status", code=502)
    assert fetch(server.en_url)[0] == 500
    assert fetch(f"{server.en_url}?PAGEN_1=2")[0] == 502


def test_fault_via_control_endpoint_routes_by_path(server):
    assert control(server, "fault", {"path": "/ru/news/", "kind": "status", "code": 500})[0] == 200
    assert fetch(server.ru_url)[0] == 500 and fetch(server.en_url)[0] == 200
    control(server, "clear-faults")
    assert fetch(server.ru_url)[0] == 200


def test_fault_plan_rejects_bad_rules(server):
    with pytest.raises(ValueError):
        FaultPlan().add(path="/news/", kind="explode")
    assert control(server, "fault", {"path": "news", "kind": "empty"})[0] == 400


# -- server ---------------------------------------------------------------------------------------
def test_extra_sections_serve_small_listings():
    with ReplicaServer(extra_sections=3) as srv:
        first = fetch(f"{srv.base_url}/s/0/news/")
        assert first[0] == 200 and listed_ids(first[2]) == [3, 2, 1]
        assert b'href="/s/0/news/news_odkb/' in first[2]
        assert fetch(f"{srv.base_url}/s/2/news/")[2] != first[2]
        assert fetch(f"{srv.base_url}/s/3/news/")[0] == 404
        etag = first[1]["ETag"]
        assert fetch(f"{srv.base_url}/s/0/news/", {"If-None-Match": etag})[0] == 304
        assert srv.section(0).requests[-1] == ("GET", "/s/0/news/", 304)


def until_in_flight(server: ReplicaServer, count: int) -> None:
    """Wait until the server is reading or answering `count` requests."""
    wait_for(lambda: server.in_flight >= count, 10, f"{count} requests in flight", every=0.01)


@pytest.mark.parametrize("fault", [{"kind": "delay", "seconds": 30}, {"kind": "hold"}])
def test_stop_returns_promptly_during_a_delayed_or_held_request(fault):
    srv = ReplicaServer().start()
    srv.replica_en.faults.add(path="/news/", **fault)
    worker = threading.Thread(target=lambda: fetch(srv.en_url), daemon=True)
    worker.start()
    until_in_flight(srv, 1)
    began = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - began < 1.0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.en_url, timeout=2)


def test_server_is_quiet(server, capfd):
    fetch(server.en_url)
    fetch(server.base_url + "/missing/")
    server.replica_en.faults.add(path="/news/", kind="truncate", bytes=10)
    with urllib.request.urlopen(server.en_url) as resp, pytest.raises(http.client.IncompleteRead):
        resp.read()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_stop_answers_the_requests_it_was_delaying():
    srv = ReplicaServer().start()
    srv.replica_en.faults.add(path="/news/", kind="delay", seconds=30)
    answers: list[int] = []
    waiting = threading.Thread(target=lambda: answers.append(fetch(srv.en_url)[0]))
    waiting.start()
    until_in_flight(srv, 1)
    srv.stop()
    waiting.join(timeout=5)
    assert answers == [200]


def test_concurrent_requests_share_one_server_thread(server):
    server.replica_en.faults.add(path="/news/", kind="hold")
    before = threading.active_count()
    clients = [threading.Thread(target=fetch, args=(server.en_url,)) for _ in range(20)]
    for client in clients:
        client.start()
    until_in_flight(server, len(clients))
    assert threading.active_count() <= before + len(clients)  # the clients' threads only
    control(server, "clear-faults")
    for client in clients:
        client.join(timeout=10)
    assert [r[2] for r in server.replica_en.requests] == [200] * 20


def raw_exchange(server: ReplicaServer, request: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_bytes_sent_counts_status_line_headers_and_body(server):
    before = server.bytes_sent
    answer = raw_exchange(server, b"GET /news/ HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and b"news-list" in answer
    assert server.bytes_sent - before == len(answer)


def test_malformed_request_line_answers_400(server):
    assert raw_exchange(server, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.0 400 ")


def test_head_answers_the_headers_of_a_get_without_a_body(server):
    def answer(method: bytes) -> tuple[list[bytes], bytes]:
        head, _, body = raw_exchange(server, method + b" /news/ HTTP/1.0\r\n\r\n").partition(
            b"\r\n\r\n"
        )
        return [line for line in head.split(b"\r\n") if not line.startswith(b"Date:")], body

    (get_head, get_body), (head_head, head_body) = answer(b"GET"), answer(b"HEAD")
    assert head_head == get_head and b"news-list" in get_body and head_body == b""


def test_other_methods_on_pages_answer_405(server):
    answer = raw_exchange(server, b"PUT /news/ HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 405 ") and b"Allow: GET, HEAD\r\n" in answer


def test_stop_while_clients_keep_connecting_leaves_no_socket_open_and_prints_nothing(capfd):
    def client(srv: ReplicaServer, stopping: threading.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(OSError):
                raw_exchange(srv, b"GET /news/ HTTP/1.0\r\n\r\n")

    for _ in range(5):
        srv, stopping = ReplicaServer().start(), threading.Event()
        clients = [threading.Thread(target=client, args=(srv, stopping)) for _ in range(10)]
        for thread in clients:
            thread.start()
        until_in_flight(srv, 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            srv.stop()
            stopping.set()
            for thread in clients:
                thread.join(timeout=10)
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert capfd.readouterr() == ("", "")


def test_stop_cuts_a_stream_the_client_stopped_reading():
    srv = ReplicaServer().start()
    srv.replica_en.faults.add(path="/news/", kind="oversize", bytes=200_000_000)
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(b"GET /news/ HTTP/1.0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 200 ")
        time.sleep(0.3)  # the server fills the socket's buffers and waits
        srv.stop()
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(1 << 20):  # what was sent, then the end; a timeout fails the test
                pass
