"""Text recorded in a run directory, made safe to show on a terminal.

A recorded command, path or config value may hold control characters (an escape sequence, a
carriage return) that would make a terminal show something else than what is there: a crafted
directory could display a harmless command while another one runs. Shown text escapes them; the
text itself (the command actually run) is never changed.
"""

from __future__ import annotations

import shlex
import unicodedata
from collections.abc import Iterable

#: Unicode categories that a terminal does not show as themselves: controls, format characters
#: (bidirectional overrides among them), line and paragraph separators.
_HIDDEN = ("Cc", "Cf", "Zl", "Zp")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with its control characters escaped as in a Python string (``\\x1b``, ``\\n``)."""
    return "".join(_escape(char) if _hidden(char) else char for char in text)


def shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell; one with control characters as ``$'...'`` with escapes,
    so that the line shown is the line that a shell would run."""
    if not any(_hidden(char) for char in word):
        return shlex.quote(word)
    body = "".join(
        "\\\\" if char == "\\" else "\\'" if char == "'" else _escape(char) if _hidden(char) else char
        for char in word
    )
    return f"$'{body}'"


def shell_line(words: Iterable[str]) -> str:
    """The words as one shell line (see :func:`shell_word`)."""
    return " ".join(shell_word(word) for word in words)
