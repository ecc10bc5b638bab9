"""Scrapy components that are off by their setting are taken out of the list, so never imported.

Scrapy imports every component its component dicts list before it asks the component whether
its setting turns it off. A component that is off costs its imports all the same: Scrapy 2.19's
RemoteControl imports aiohttp (about 100 ms), CookiesMiddleware imports tldextract and requests
(about 30 ms), and every `newsmon check` started by cron paid them.

Mapping a component to None, Scrapy's documented way to disable one, does not help: Scrapy 2.19
imports each key of EXTENSIONS and DOWNLOADER_MIDDLEWARES to match it with the _BASE entries.
So the entry goes from the _BASE dict itself, which Scrapy's docs ask projects not to edit (so
that they keep the defaults): everything else in it stays as Scrapy ships it, and it happens only
while the component's setting is off, so the setting stays the one switch a user turns
(`-s COOKIES_ENABLED=True` brings the middleware back).
"""

from __future__ import annotations

from typing import Any

SWITCHED_BY = {
    "REMOTE_CONTROL_ENABLED": ("EXTENSIONS", "scrapy.extensions.remote_control.RemoteControl"),
    "TELNETCONSOLE_ENABLED": ("EXTENSIONS", "scrapy.extensions.telnet.TelnetConsole"),
    "COOKIES_ENABLED": (
        "DOWNLOADER_MIDDLEWARES",
        "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",
    ),
}


def unlist_switched_off(settings: Any) -> None:
    """Take each component whose setting is off out of its _BASE dict, unless the project or the
    user lists it in the dict they edit (then Scrapy imports it, and it says it is off)."""
    for switch, (components, path) in SWITCHED_BY.items():
        if settings.getbool(switch, True) or path in (settings.getdict(components) or {}):
            continue
        base_name = components + "_BASE"
        base = settings.getdict(base_name)
        if base.pop(path, None) is not None:
            # Above "default": Scrapy's runner re-applies its own settings to a crawler it is
            # given, and its untouched _BASE dicts are at "default".
            settings.set(base_name, base, priority="spider")
