"""Alert channels, registered by `kind` when their modules are imported here."""

from monitor.alerts import apprise_channel, jsonl, stdout, webhook  # noqa: F401  (registers)
from monitor.alerts.base import (
    Channel,
    ChannelConfigError,
    DeliveryError,
    build_channels,
    redact_url,
)

__all__ = ["Channel", "ChannelConfigError", "DeliveryError", "build_channels", "redact_url"]
