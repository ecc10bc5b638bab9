"""What the spider hands to the item pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ArticleItem:
    """One fetched article page, before normalization (raw text and HTML)."""

    source: str
    url: str
    language: str | None = None
    title: str | None = None
    date_text: str | None = None
    listing_title: str | None = None
    listing_date: str | None = None
    summary: str | None = None
    body_html: str | None = None
    canonical: str | None = None
    attachments: list[str] = field(default_factory=list)
    fetched_at: str | None = None
    listing_url: str | None = None  # the canonical URL the listing linked to, if it differs
    article_id: int | None = None  # set when a stored article is re-fetched for edits
    etag: str | None = None
    last_modified: str | None = None
    # The pipeline's normalized form, when the page worker computed it with the item
    # (scraper/workers.py); NormalizePipeline then only checks it.
    normalized: dict[str, Any] | None = None


@dataclass
class RemovedItem:
    """A stored article whose page now answers 404 or 410."""

    source: str
    article_id: int
    url: str
    status: int
