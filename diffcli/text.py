"""Text that reaches a terminal: control characters from images, files or flags are never printed raw."""

from __future__ import annotations

import re

# C0 and C1 controls (ESC starts terminal escape sequences; CSI is \x9b), DEL, and the Unicode
# bidirectional overrides that can make a line read differently from what it holds.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape(text: str, keep_newlines: bool = False) -> str:
    """TEXT with every control character written as a visible escape (\\x1b, \\u202e, ...);
    tabs stay, newlines stay only when KEEP_NEWLINES."""

    def sub(m: re.Match) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    text = _CONTROL.sub(sub, str(text))
    return text if keep_newlines else text.replace("\n", "\\n")


def shown(value) -> str:
    """VALUE quoted for a one-line message, control characters escaped."""
    return f"'{escape(str(value))}'"


def one_line(text: str) -> str:
    """TEXT on one line: newlines and carriage returns become spaces (for fields of the A1111 text)."""
    return re.sub(r"[\r\n]+", " ", str(text))
