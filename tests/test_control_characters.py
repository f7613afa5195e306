"""Log lines stay single lines whatever a client sends: the text formats escape control
characters (JSON lines are escaped by the encoder)."""

from __future__ import annotations

import json
import logging
import sys
import tomllib

import pytest

from service.control_characters import EscapingFormatter, escape_control_characters
from service.logs import JSONFormatter, TextFormatter
from tests.live import REPO_ROOT

# Every character that ends or rewrites a line in some terminal, log shipper or viewer.
BREAKERS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]


@pytest.mark.parametrize("character", BREAKERS)
def test_every_control_character_is_escaped(character: str) -> None:
    escaped = escape_control_characters(f"/records{character}ERROR forged")
    assert escaped.isprintable() and "\\" in escaped
    assert escaped.startswith("/records\\") and escaped.endswith("ERROR forged")


def test_escapes_cannot_be_imitated_and_text_is_kept() -> None:
    assert escape_control_characters("a\\x0ab") == "a\\\\x0ab"
    assert escape_control_characters("a\nb") == "a\\x0ab"
    assert escape_control_characters("Côte d'Ivoire ☃ %0a") == "Côte d'Ivoire ☃ %0a"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "service.request", "levelname": "INFO"})
    record.msg, record.args = message, args
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("formatter", [TextFormatter(), EscapingFormatter(), JSONFormatter()])
@pytest.mark.parametrize("character", BREAKERS)
def test_formatters_write_one_line_per_record(
    formatter: logging.Formatter, character: str
) -> None:
    path = f"/records{character}ERROR forged"
    record = _record("%s %s", "GET", path, route=f"/x{character}y")
    line = formatter.format(record)
    # str.splitlines breaks at every character some reader takes for a line end.
    assert line.splitlines() == [line] and line.isprintable(), repr(line)
    if isinstance(formatter, JSONFormatter):
        assert json.loads(line)["message"] == f"GET {path}"


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed\nhere")
        record.exc_info = sys.exc_info()
    text = EscapingFormatter().format(record)
    assert text.splitlines()[0].endswith("failed\\x0ahere")
    assert "Traceback" in text and "ValueError: boom" in text


def test_hypercorn_logs_through_the_escaping_formatter() -> None:
    config = tomllib.loads((REPO_ROOT / "hypercorn.toml").read_text())
    logging_config = config["logconfig_dict"]
    factory = logging_config["formatters"]["escaped"]["()"]
    assert factory == "service.control_characters.EscapingFormatter"
    for handler in logging_config["loggers"]["hypercorn.access"]["handlers"]:
        assert logging_config["handlers"][handler]["formatter"] == "escaped"
    # Hypercorn's own lines go to the service's handler (TextFormatter or JSONFormatter).
    error_logger = logging_config["loggers"]["hypercorn.error"]
    assert error_logger["handlers"] == [] and error_logger["propagate"] is True
