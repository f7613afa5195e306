"""Control characters escaped before text reaches a log line, so that no client can forge one.

A request's path is percent-decoded (``/records%0aERROR ...`` holds a newline), and headers
such as ``User-Agent`` can hold other control characters: written as they are, they would
start a line of their own that reads like the service's. Escaped, they read ``\\x0a`` and the
line stays one line. A backslash is doubled, so an escape sent by a client is not mistaken
for one made here.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the characters Unicode treats as line or paragraph breaks.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
# What a JSON encoder may leave raw inside a string (JSON escapes only C0 controls) that
# some readers still take for the end of a line: NEL (U+0085), U+2028, U+2029.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    if character == "\\":
        return "\\\\"
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control_characters(text: str) -> str:
    """``text`` on one line: control and line-break characters as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE.sub(_escaped, text)


def escape_json_line_breaks(document: str) -> str:
    """A JSON document with DEL, C1 controls and U+2028/U+2029 as ``\\uNNNN`` escapes.

    They can only occur inside its strings, where the escape means the same character.
    """
    return _RAW_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", document)


class EscapingFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose messages are escaped (tracebacks keep their lines).

    Hypercorn's access and error logs use it (``hypercorn.toml``, ``logconfig_dict``); its
    defaults are the format Hypercorn gives its own loggers.
    """

    def __init__(
        self,
        fmt: str = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
        datefmt: str = "[%Y-%m-%d %H:%M:%S %z]",
    ) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_control_characters(record.message)
        return super().formatMessage(record)
