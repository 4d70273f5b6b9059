"""Server-provided strings made safe for a terminal or a log line (pure).

Everything a server sends is hostile: an error body or a model name can carry ANSI escape sequences
(clear the screen, move the cursor, forge lines), other control characters or megabytes of text.
``for_terminal`` is applied to every such string before it is printed or logged; records keep the
raw text (JSON escapes control characters as ``\\u001b``, so files stay safe to ``cat``).
"""

from __future__ import annotations

import re

TERMINAL_TEXT_CHARS = 300  # default cap of one server string shown on a terminal or in a log
# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), and any other two-byte ESC sequence;
# the 8-bit forms (U+009B CSI, U+009D OSC) too.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[@-Z\\-_]?"
)
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi overrides that can
# reorder or split what a terminal shows.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def for_terminal(text: object, limit: int = TERMINAL_TEXT_CHARS) -> str:
    """One printable line: escape sequences removed, other control characters (newlines and tabs
    included) replaced by a space, runs of spaces kept as they are, capped at ``limit`` characters
    (an ellipsis and the original length mark a cut)."""
    raw = text if isinstance(text, str) else str(text)
    clean = _CONTROLS.sub(" ", _ESCAPES.sub("", raw))
    if len(clean) > limit:
        return f"{clean[:limit]}... [{len(raw)} chars]"
    return clean
