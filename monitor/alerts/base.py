"""Alert channels: the shared contract, config validation, secrets and redaction.

Why one base class: every channel shares the same filters (events, sources, keywords),
the same retry budget and the same config checks, so a channel module only adds its own
options and `send()`. Channels register themselves by `kind` (like urlwatch's reporters),
so adding one is adding one small module.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from storage.escapes import ESCAPES

EVENTS = frozenset({"new", "updated", "removed", "source_error"})

# Keys every [[alerts]] block may use, with their TOML types.
COMMON_KEYS: dict[str, type | tuple] = {
    "type": str,
    "name": str,
    "events": list,
    "sources": list,
    "keywords": list,
    "digest": bool,
    "max_attempts": int,
}

_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
_NAME_RE = re.compile(r"[\w][\w .:@+-]{0,63}")
# C0/C1 controls, DEL, line/paragraph separators and bidi overrides (terminal spoofing).
_CONTROLS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_PUBLIC_SEGMENT_RE = re.compile(r"[A-Za-z][A-Za-z_.-]{0,15}")


class ChannelConfigError(ValueError):
    """A bad [[alerts]] block; `key` names the offending key so the CLI can point at it."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class DeliveryError(Exception):
    """A send that failed and may be retried; it is logged and stored, so never a secret."""


class Channel:
    """One configured alert destination: filters, retry budget and a `send()`."""

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Channel]]] = {}
    options: ClassVar[dict[str, type | tuple]] = {}
    required: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        """Register by `kind`; `register=False` keeps test doubles out of the registry."""
        super().__init_subclass__(**kwargs)
        if not register or not cls.kind:
            return
        known = Channel.registry.get(cls.kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"channel kind {cls.kind!r} is already taken by {known.__name__}")
        Channel.registry[cls.kind] = cls

    def __init__(
        self,
        *,
        name: str | None = None,
        events: Iterable[str] = ("new",),
        sources: Iterable[str] | None = None,
        keywords: Iterable[str] = (),
        digest: bool = False,
        max_attempts: int = 10,
    ) -> None:
        self.name = _check_name(self.kind if name is None else name)
        self.events = _check_events(events)
        self.sources = None if sources is None else frozenset(_check_strings(sources, "sources"))
        self.keywords = _check_strings(keywords, "keywords", allow_empty=True)
        self._folded = tuple(k.casefold() for k in self.keywords)
        self.digest = bool(digest)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ChannelConfigError("`max_attempts` must be an integer >= 1", "max_attempts")
        self.max_attempts = max_attempts

    @classmethod
    def from_config(
        cls, block: Mapping[str, Any], index: int, *, environ: Mapping[str, str] | None = None
    ) -> Channel:
        """Build a channel from one [[alerts]] table; errors say which block and key."""
        where = f"alerts[{index}]"
        if not isinstance(block, Mapping):
            raise ChannelConfigError(f"{where}: each [[alerts]] entry must be a table")
        channel_cls = cls if cls.kind else _lookup(block, where)
        env = os.environ if environ is None else environ
        try:
            resolved = {key: resolve_env(value, key, env) for key, value in block.items()}
            return channel_cls(**channel_cls.validate(resolved))
        except ChannelConfigError as exc:
            raise ChannelConfigError(f"{where} ({channel_cls.kind}): {exc}", exc.key) from None

    @classmethod
    def validate(cls, block: Mapping[str, Any]) -> dict[str, Any]:
        """Check keys and TOML types (values are never echoed: they may be secrets)."""
        allowed = {**COMMON_KEYS, **cls.options}
        if block.get("type", cls.kind) != cls.kind:
            raise ChannelConfigError(f"`type` must be {cls.kind!r}", "type")
        for key, value in block.items():
            if key not in allowed:
                raise ChannelConfigError(_unknown_key(key, allowed), key)
            if not _has_type(value, allowed[key]):
                words = _type_words(allowed[key])
                raise ChannelConfigError(
                    f"`{key}` must be {words}, not {type(value).__name__}", key
                )
        for key in cls.required:
            if key not in block:
                raise ChannelConfigError(f"{cls.kind} channel needs a `{key}`", key)
        return {key: value for key, value in block.items() if key != "type"}

    def matches(self, event: str, source: str, title: str | None, body: str | None) -> bool:
        """Filters: event, source, then keywords (any-of, case-insensitive; not for errors)."""
        if event not in self.events:
            return False
        if self.sources is not None and source not in self.sources:
            return False
        if event == "source_error" or not self._folded:
            return True
        text = f"{title or ''}\n{body or ''}".casefold()
        return any(keyword in text for keyword in self._folded)

    def send(self, payloads: list[dict]) -> None:
        """Deliver one payload, or all items of a digest; raise DeliveryError on failure."""
        raise NotImplementedError

    def describe(self) -> str:
        """Redacted one-liner for listings and logs."""
        return self.kind

    def secrets(self) -> Iterable[str]:
        """Strings that must never appear in logs or stored errors."""
        return ()

    def redact(self, text: str) -> str:
        """Mask this channel's secrets in any text (e.g. a library's exception message)."""
        for secret in sorted(set(self.secrets()), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "…")
        return text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.describe()}>"


def build_channels(
    blocks: Iterable[Mapping[str, Any]], *, environ: Mapping[str, str] | None = None
) -> list[Channel]:
    """Validate every [[alerts]] block; names default to the type, or `type-N` if repeated."""
    blocks = list(blocks)
    channels: list[Channel] = []
    seen: dict[str, int] = {}
    for index, block in enumerate(_with_default_names(blocks)):
        channel = Channel.from_config(block, index, environ=environ)
        if channel.name in seen:
            raise ChannelConfigError(
                f"alerts[{index}]: duplicate channel name {channel.name!r} "
                f"(also alerts[{seen[channel.name]}]); give each channel a unique `name`",
                "name",
            )
        seen[channel.name] = index
        channels.append(channel)
    return channels


def resolve_env(value: Any, key: str, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace `{"$env": "NAME"}` anywhere in a value (Datasette style), failing loudly.

    Unlike a silent None, a missing variable is a config error: a channel that quietly
    loses its token would fail every delivery instead of failing at startup.
    """
    path = path or key
    if isinstance(value, Mapping):
        if set(value) == {"$env"}:
            name = value["$env"]
            if not isinstance(name, str) or not name:
                raise ChannelConfigError(f"`{path}`: $env must name an environment variable", key)
            if not environ.get(name):
                raise ChannelConfigError(
                    f"`{path}` comes from environment variable {name}, which is not set", key
                )
            return environ[name]
        return {k: resolve_env(v, key, environ, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, key, environ, path) for v in value]
    return value


def redact_url(url: str) -> str:
    """Show where a URL points without its secrets.

    Keeps scheme, host, port and the first path segment when it looks like a plain word
    (`/services`, `/api`); drops userinfo; the rest of the path, query values and the
    fragment become `…`. Webhook tokens live in paths and queries, so this errs on hiding.
    """
    try:
        parts = urlsplit(str(url).strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return f"{parts.scheme}:…" if parts.scheme.isalnum() else "…"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    segments = [s for s in parts.path.split("/") if s]
    path = "/" if parts.path.startswith("/") or parts.query else ""
    if segments:
        first = segments[0] if _PUBLIC_SEGMENT_RE.fullmatch(segments[0]) else "…"
        path += first + ("/…" if len(segments) > 1 and first != "…" else "")
    query = "&".join(
        f"{k if _PUBLIC_SEGMENT_RE.fullmatch(k) else '…'}=…"
        for k, _ in parse_qsl(parts.query, keep_blank_values=True)
    )
    query = f"?{query or '…'}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{query}{'#…' if parts.fragment else ''}"


def url_secrets(url: str, *, include_host: bool = False) -> set[str]:
    """The parts of a URL that redact_url hides, for scrubbing free-form error text."""
    try:
        parts = urlsplit(url)
        found = {url, parts.password or "", parts.path, parts.query, parts.fragment}
        found.add(parts.netloc.rpartition("@")[0])
        if include_host:
            found.add(parts.hostname or "")
    except ValueError:
        return {url}
    found.update(s for s in parts.path.split("/") if not _PUBLIC_SEGMENT_RE.fullmatch(s))
    found.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
    return {s for s in found if s}


def clean_text(value: object) -> str:
    """One safe line: strip ANSI escapes and control characters, collapse whitespace.

    Titles come from arbitrary web pages; unstripped, an ESC sequence could repaint a
    terminal or forge extra log lines.
    """
    text = ESCAPES.sub("", "" if value is None else str(value))
    return " ".join(_CONTROLS_RE.sub(" ", text).split())


def alert_line(payload: Mapping[str, Any]) -> str:
    """`[new] csto-en 2024-04-22 Title — https://…`, every field cleaned."""
    head = [f"[{clean_text(payload.get('event'))}]", clean_text(payload.get("source"))]
    if payload.get("event") == "source_error":
        return " ".join([*head, "—", clean_text(payload.get("reason")) or "unknown error"])
    published = clean_text(payload.get("published"))[:10]
    title = clean_text(payload.get("title")) or "(untitled)"
    line = " ".join([*head, *([published] if published else []), title])
    url = clean_text(payload.get("url"))
    return f"{line} — {url}" if url else line


def digest_title(payloads: list[dict]) -> str:
    """`[newsmon] 5 new articles`, or a neutral count when events are mixed."""
    events = {p.get("event") for p in payloads}
    count = len(payloads)
    if events == {"source_error"}:
        what = "source error" if count == 1 else "source errors"
    elif len(events) == 1:
        what = f"{clean_text(events.pop())} article{'' if count == 1 else 's'}"
    else:
        what = "alert" if count == 1 else "alerts"
    return f"[newsmon] {count} {what}"


def _lookup(block: Mapping[str, Any], where: str) -> type[Channel]:
    known = ", ".join(sorted(Channel.registry))
    kind = block.get("type")
    if kind is None:
        raise ChannelConfigError(f"{where}: missing `type` (known types: {known})", "type")
    if not isinstance(kind, str) or kind not in Channel.registry:
        shown = repr(kind) if isinstance(kind, str) else type(kind).__name__
        raise ChannelConfigError(
            f"{where}: unknown channel type {shown} (known types: {known})", "type"
        )
    return Channel.registry[kind]


def _with_default_names(blocks: list[Any]) -> list[Any]:
    """Unnamed blocks get their type, or `type-N` (N counts that type from 1) if repeated."""
    types = [b.get("type") if isinstance(b, Mapping) else None for b in blocks]
    result: list[Any] = []
    ordinal: dict[str, int] = {}
    for block, kind in zip(blocks, types, strict=True):
        if not isinstance(kind, str) or "name" in block:
            result.append(block)
            continue
        ordinal[kind] = ordinal.get(kind, 0) + 1
        name = f"{kind}-{ordinal[kind]}" if types.count(kind) > 1 else kind
        result.append({**block, "name": name})
    return result


def _has_type(value: Any, expected: type | tuple) -> bool:
    """isinstance, except that a TOML boolean is not an integer or a number."""
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in wanted:
        return False
    if float in wanted and isinstance(value, int):
        return True
    return isinstance(value, wanted)


def _type_words(expected: type | tuple) -> str:
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if float in wanted:
        return "a number"
    return " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in wanted)


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"unknown key `{key}` ({hint}allowed: {', '.join(sorted(allowed))})"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ChannelConfigError(
            "`name` must be 1-64 letters, digits or `_ .:@+-`, starting with a letter or digit",
            "name",
        )
    return name


def _check_events(events: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(_check_strings(events, "events"))
    unknown = sorted(chosen - EVENTS)
    if unknown:
        raise ChannelConfigError(
            f"`events`: unknown event {unknown[0]!r} (allowed: {', '.join(sorted(EVENTS))})",
            "events",
        )
    return chosen


def _check_strings(values: Iterable[str], key: str, allow_empty: bool = False) -> tuple[str, ...]:
    items = list(values) if not isinstance(values, str) else [values]
    if isinstance(values, str) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ChannelConfigError(f"`{key}` must be a list of non-empty strings", key)
    if not items and not allow_empty:
        raise ChannelConfigError(f"`{key}` must not be empty (leave it out for the default)", key)
    return tuple(dict.fromkeys(items))
