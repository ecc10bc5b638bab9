"""Terminal escape sequences, which page content may carry and nothing newsmon prints may keep.

Here rather than in monitor/terminal.py because storage (feeds and exports) strips them too and
must not import the CLI package.
"""

from __future__ import annotations

import re

# ANSI/VT escape sequences: CSI (ESC [ or 0x9b), OSC (ESC ] ... BEL/ST), and two-byte escapes.
# Removed before control characters, so their parameters go too.
ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]+[0-~]"
    r"|\x1b[@-_]"
)
