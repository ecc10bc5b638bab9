"""Alert channels against real endpoints: a local HTTP receiver, real files, real apprise."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitor.alerts import Channel, ChannelConfigError, DeliveryError, build_channels, redact_url
from monitor.alerts.apprise_channel import AppriseChannel
from monitor.alerts.base import clean_text
from monitor.alerts.jsonl import JsonlChannel
from monitor.alerts.stdout import StdoutChannel
from monitor.alerts.webhook import WebhookChannel

SECRET = "s3cr3tT0kenXYZ987"


class Receiver:
    """A real HTTP endpoint on 127.0.0.1: fails its first `fail_first` POSTs with 500."""

    def __init__(self, fail_first: int = 0, status: int = 200) -> None:
        self.fail_first = fail_first
        self.status = status
        self.requests: list[dict] = []  # every POST: path, headers, body, answered status
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def accepted(self) -> list[dict]:
        return [r for r in self.requests if 200 <= r["status"] < 300]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    failing = len(receiver.requests) < receiver.fail_first
                    status = 500 if failing else receiver.status
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body or b"null"),
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rec:
        yield rec


def payload(**overrides: object) -> dict:
    base = {
        "alert_id": "a1",
        "event": "new",
        "source": "csto-en",
        "url": "https://en.odkb-csto.org/news/1/",
        "title": "Title",
        "published": "2024-04-22T10:00:00+00:00",
        "summary": "Summary.",
        "detected_at": "2026-11-27T02:21:46+00:00",
        "article_id": 1,
    }
    return {**base, **overrides}


# --- configuration -------------------------------------------------------------------


def test_defaults_and_names() -> None:
    channels = build_channels(
        [
            {"type": "stdout"},
            {"type": "jsonl", "path": "/tmp/a.jsonl"},
            {"type": "jsonl", "path": "/tmp/b.jsonl"},
        ]
    )
    assert [c.name for c in channels] == ["stdout", "jsonl-1", "jsonl-2"]
    first = channels[0]
    assert first.events == frozenset({"new"})
    assert first.sources is None and first.keywords == () and first.digest is False
    assert first.max_attempts == 10
    assert set(Channel.registry) >= {"stdout", "jsonl", "webhook", "apprise"}


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ChannelConfigError, match="duplicate channel name 'x'") as info:
        build_channels(
            [{"type": "stdout", "name": "x"}, {"type": "jsonl", "name": "x", "path": "p"}]
        )
    assert info.value.key == "name"


def test_unknown_type_names_known_types() -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channels([{"type": "telegram"}])
    assert info.value.key == "type"
    message = str(info.value)
    assert "alerts[0]" in message and "'telegram'" in message
    for kind in ("apprise", "jsonl", "stdout", "webhook"):
        assert kind in message
    with pytest.raises(ChannelConfigError, match="missing `type`"):
        build_channels([{"name": "x"}])


@pytest.mark.parametrize(
    ("block", "key", "fragment"),
    [
        ({"type": "webhook", "url": "https://h/x", "uri": "x"}, "uri", "did you mean `url`"),
        ({"type": "stdout", "digest": "yes"}, "digest", "must be true or false"),
        ({"type": "stdout", "max_attempts": True}, "max_attempts", "must be an integer"),
        ({"type": "stdout", "max_attempts": 0}, "max_attempts", ">= 1"),
        ({"type": "stdout", "events": "new"}, "events", "must be a list"),
        ({"type": "stdout", "events": ["created"]}, "events", "unknown event 'created'"),
        ({"type": "stdout", "sources": [1]}, "sources", "non-empty strings"),
        ({"type": "stdout", "keywords": [""]}, "keywords", "non-empty strings"),
        ({"type": "webhook", "url": "https://h/x", "timeout": "5"}, "timeout", "a number"),
        ({"type": "webhook", "url": "https://h/x", "timeout": 0}, "timeout", "> 0"),
        ({"type": "webhook", "url": "ftp://h/x"}, "url", "http:// or https://"),
        ({"type": "webhook", "url": "https://h/", "headers": {"X": "a\nb"}}, "headers", "line"),
        ({"type": "webhook"}, "url", "webhook channel needs a `url`"),
        ({"type": "apprise"}, "url", "apprise channel needs a `url`"),
        ({"type": "jsonl"}, "path", "jsonl channel needs a `path`"),
        ({"type": "stdout", "name": "bad\nname"}, "name", "`name` must be"),
    ],
)
def test_config_errors(block: dict, key: str, fragment: str) -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channels([block])
    assert info.value.key == key
    assert fragment in str(info.value)
    assert str(info.value).startswith("alerts[0] (")


def test_wrong_type_message_never_echoes_the_value() -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channels([{"type": "webhook", "url": 12345678901}])
    assert info.value.key == "url" and "12345678901" not in str(info.value)


def test_env_secrets_resolved_at_build_time(receiver: Receiver) -> None:
    env = {"HOOK_URL": f"{receiver.url}/hook/{SECRET}", "HOOK_TOKEN": SECRET}
    (channel,) = build_channels(
        [
            {
                "type": "webhook",
                "url": {"$env": "HOOK_URL"},
                "headers": {"Authorization": {"$env": "HOOK_TOKEN"}},
            }
        ],
        environ=env,
    )
    channel.send([payload()])
    (request,) = receiver.requests
    assert request["path"] == f"/hook/{SECRET}"
    assert request["headers"]["Authorization"] == SECRET
    assert SECRET not in channel.describe() and SECRET not in repr(channel)


def test_env_secret_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSMON_TEST_MISSING", raising=False)
    with pytest.raises(ChannelConfigError, match="NEWSMON_TEST_MISSING, which is not set") as info:
        build_channels([{"type": "webhook", "url": {"$env": "NEWSMON_TEST_MISSING"}}])
    assert info.value.key == "url"
    with pytest.raises(ChannelConfigError, match=r"headers\.X-Token") as info:
        build_channels(
            [{"type": "webhook", "url": "https://h/", "headers": {"X-Token": {"$env": ""}}}]
        )
    assert info.value.key == "headers"


def test_env_secret_from_real_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("NEWSMON_TEST_PATH", str(tmp_path / "alerts.jsonl"))
    (channel,) = build_channels([{"type": "jsonl", "path": {"$env": "NEWSMON_TEST_PATH"}}])
    assert channel.describe() == f"jsonl {tmp_path / 'alerts.jsonl'}"


# --- filters -------------------------------------------------------------------------


def test_filters_events_sources_keywords() -> None:
    (channel,) = build_channels(
        [
            {
                "type": "stdout",
                "events": ["new", "source_error"],
                "sources": ["csto-en"],
                "keywords": ["Summit", "SECURITY"],
            }
        ]
    )
    assert channel.matches("new", "csto-en", "CSTO summit opens", None)
    assert channel.matches("new", "csto-en", "Other", "collective security council")
    assert not channel.matches("new", "csto-en", "Weather", "sunny")
    assert not channel.matches("updated", "csto-en", "Summit", None)
    assert not channel.matches("new", "csto-ru", "Summit", None)
    assert channel.matches("source_error", "csto-en", None, None)  # keywords never filter errors
    assert not channel.matches("source_error", "csto-ru", None, None)


def test_no_keywords_matches_everything() -> None:
    (channel,) = build_channels([{"type": "stdout"}])
    assert channel.matches("new", "any", None, None)


# --- redaction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T0/B0/XXXX", "https://hooks.example.com/services/…"),
        (f"https://hooks.example.com/{SECRET}", "https://hooks.example.com/…"),
        (f"https://user:{SECRET}@example.com:8443/hook", "https://example.com:8443/hook"),
        (f"https://example.com/api?token={SECRET}&x=1", "https://example.com/api?token=…&x=…"),
        ("https://example.com", "https://example.com"),
        (f"https://example.com/#{SECRET}", "https://example.com/#…"),
        ("http://[::1", "<invalid URL>"),
        (f"mailto:{SECRET}@example.com", "mailto:…"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


def test_webhook_errors_never_contain_secrets(receiver: Receiver) -> None:
    receiver.status = 500
    url = (
        f"http://user:{SECRET}@127.0.0.1:{receiver.server.server_address[1]}/h/{SECRET}?k={SECRET}"
    )
    channel = WebhookChannel(url=url, headers={"X-Key": SECRET})
    with pytest.raises(DeliveryError) as info:
        channel.send([payload()])
    assert "HTTP 500" in str(info.value) and "127.0.0.1" in str(info.value)
    assert SECRET not in str(info.value)
    assert receiver.requests[0]["headers"]["Authorization"].startswith("Basic ")
    assert f"{SECRET}" not in channel.redact(f"boom {url} {SECRET}")


def test_webhook_connection_refused_is_a_safe_delivery_error() -> None:
    closed = Receiver()  # bound but never served or listened on after close
    port = closed.server.server_address[1]
    closed.server.server_close()
    channel = WebhookChannel(url=f"http://127.0.0.1:{port}/hook/{SECRET}", timeout=2)
    with pytest.raises(DeliveryError) as info:
        channel.send([payload()])
    assert SECRET not in str(info.value) and "refused" in str(info.value).lower()


def test_webhook_does_not_follow_redirects(receiver: Receiver) -> None:
    receiver.status = 302
    with pytest.raises(DeliveryError, match="HTTP 302"):
        WebhookChannel(url=f"{receiver.url}/hook").send([payload()])
    assert len(receiver.requests) == 1


# --- webhook -------------------------------------------------------------------------


def test_webhook_posts_payload_json(receiver: Receiver) -> None:
    channel = WebhookChannel(url=f"{receiver.url}/hook", headers={"X-Team": "news"})
    channel.send([payload(title="Заголовок")])
    (request,) = receiver.requests
    assert request["body"] == payload(title="Заголовок")
    assert request["headers"]["Content-Type"].startswith("application/json")
    assert request["headers"]["X-Team"] == "news"
    assert request["headers"]["Idempotency-Key"] == "a1"


def test_webhook_digest_shape(receiver: Receiver) -> None:
    channel = WebhookChannel(url=f"{receiver.url}/hook", digest=True)
    items = [payload(alert_id=f"a{i}", article_id=i) for i in range(3)]
    channel.send(items)
    (request,) = receiver.requests
    assert request["body"] == {"digest": True, "alert_ids": ["a0", "a1", "a2"], "items": items}


# --- stdout --------------------------------------------------------------------------


def test_stdout_line_format() -> None:
    out = io.StringIO()
    StdoutChannel(stream=out).send([payload()])
    assert out.getvalue() == "[new] csto-en 2024-04-22 Title — https://en.odkb-csto.org/news/1/\n"


def test_stdout_strips_escapes_and_controls() -> None:
    out = io.StringIO()
    evil = "\x1b[31mRed\x1b[0m\x1b]0;pwned\x07 title\r\nforged line\x00\x07\u202e"
    StdoutChannel(stream=out).send([payload(title=evil, source="csto\x1b[2Jen")])
    text = out.getvalue()
    assert (
        text == "[new] cstoen 2024-04-22 Red title forged line — https://en.odkb-csto.org/news/1/\n"
    )
    assert all(ch == "\n" or ch.isprintable() for ch in text)


def test_stdout_defaults_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    (channel,) = build_channels([{"type": "stdout", "events": ["source_error"]}])
    channel.send([payload(event="source_error", reason="HTTP 503", url=None, title=None)])
    assert capsys.readouterr().out == "[source_error] csto-en — HTTP 503\n"


def test_stdout_digest_header_then_items() -> None:
    out = io.StringIO()
    items = [payload(title=f"T{i}") for i in range(3)]
    StdoutChannel(stream=out, digest=True).send(items)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[newsmon] 3 new articles"
    assert [line.split(" — ")[0].rsplit(" ", 1)[1] for line in lines[1:]] == ["T0", "T1", "T2"]


def test_clean_text_keeps_unicode() -> None:
    assert clean_text("Саммит ОДКБ\t2024 — итоги") == "Саммит ОДКБ 2024 — итоги"


# --- jsonl ---------------------------------------------------------------------------


def test_jsonl_appends_private_lines(tmp_path) -> None:
    path = tmp_path / "alerts.jsonl"
    channel = JsonlChannel(path=str(path))
    channel.send([payload(alert_id="a1", title="Заголовок")])
    channel.send([payload(alert_id="a2"), payload(alert_id="a3")])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["alert_id"] for line in lines] == ["a1", "a2", "a3"]
    assert "Заголовок" in lines[0]  # ensure_ascii=False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    JsonlChannel(path=str(path)).send([payload(alert_id="a4")])  # a new channel appends too
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4


def test_jsonl_expands_home_and_repairs_partial_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (channel,) = build_channels([{"type": "jsonl", "path": "~/out.jsonl"}])
    (tmp_path / "out.jsonl").write_text('{"alert_id": "half', encoding="utf-8")
    channel.send([payload(alert_id="a9")])
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["alert_id"] == "a9"


def test_jsonl_unwritable_is_delivery_error(tmp_path) -> None:
    channel = JsonlChannel(path=str(tmp_path / "missing-dir" / "a.jsonl"))
    with pytest.raises(DeliveryError, match="No such file"):
        channel.send([payload()])


# --- apprise -------------------------------------------------------------------------


def test_apprise_json_target_receives_title_and_body(receiver: Receiver) -> None:
    port = receiver.server.server_address[1]
    (channel,) = build_channels([{"type": "apprise", "url": f"json://127.0.0.1:{port}/notify"}])
    channel.send([payload(title="Summit \x1b[31mopens\x1b[0m")])
    (request,) = receiver.requests
    assert request["path"] == "/notify"
    assert request["body"]["title"] == "[newsmon] new: Summit opens"
    body = request["body"]["message"]
    assert "2024-04-22" in body and "Summary." in body
    assert "https://en.odkb-csto.org/news/1/" in body


def test_apprise_digest(receiver: Receiver) -> None:
    port = receiver.server.server_address[1]
    channel = AppriseChannel(url=f"json://127.0.0.1:{port}/", digest=True)
    channel.send([payload(title=f"T{i}") for i in range(5)])
    (request,) = receiver.requests
    assert request["body"]["title"] == "[newsmon] 5 new articles"
    assert request["body"]["message"].count("\n") == 4


def test_apprise_failure_is_safe_delivery_error(receiver: Receiver) -> None:
    receiver.status = 500
    port = receiver.server.server_address[1]
    channel = AppriseChannel(url=f"json://user:{SECRET}@127.0.0.1:{port}/{SECRET}")
    with pytest.raises(DeliveryError) as info:
        channel.send([payload()])
    assert SECRET not in str(info.value) and SECRET not in channel.describe()


def test_apprise_invalid_url() -> None:
    with pytest.raises(ChannelConfigError, match="not a valid Apprise URL") as info:
        build_channels([{"type": "apprise", "url": f"nosuchservice://{SECRET}/x"}])
    assert info.value.key == "url" and SECRET not in str(info.value)
    with pytest.raises(ChannelConfigError, match="exactly one"):
        build_channels([{"type": "apprise", "url": "json://127.0.0.1/ json://127.0.0.2/"}])
