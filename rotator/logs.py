"""Structured logging: stable event names with fields, human-readable or JSON lines.

    log_event(logger, "rotator.key_created", kid="...")

Only kids, times, counts and error messages are ever passed as fields; key
material never reaches a logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["log_event", "setup_logging", "LOGGER"]

LOGGER = logging.getLogger("rotator")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, event, extra={"event": event, "fields": fields})


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class HumanFormatter(logging.Formatter):
    """``2026-11-24T10:00:00.000Z info  rotator.key_created kid=abc``"""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or record.getMessage()
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts = [_timestamp(record), f"{record.levelname.lower():<5}", event]
        parts += [f"{k}={_value(v)}" for k, v in fields.items()]
        if record.exc_info and not fields.get("error"):
            parts.append(f"error={_value(record.exc_info[1])}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        for key, value in (getattr(record, "fields", {}) or {}).items():
            doc.setdefault(key, value if isinstance(value, (int, float, bool, type(None))) else str(value))
        return json.dumps(doc, separators=(",", ":"))


def setup_logging(fmt: str = "human", stream: TextIO | None = None, level: int = logging.INFO) -> None:
    if fmt not in ("human", "json"):
        raise ValueError(f"log format {fmt!r}: expected human or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    # APScheduler's own messages go through the same handler, at warning and above.
    aps = logging.getLogger("apscheduler")
    aps.handlers[:] = [handler]
    aps.setLevel(logging.WARNING)
    aps.propagate = False
