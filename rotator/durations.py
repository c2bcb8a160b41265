"""Human durations: ``90s``, ``15m``, ``24h``, ``1d``, ``1h30m``, ``500ms``."""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["parse_duration", "format_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | int | float, *, name: str = "duration", source: str | None = None) -> float:
    """Return seconds. Bare numbers are seconds; anything else must be unit-tagged parts."""
    where = f" (from {source})" if source else ""
    if isinstance(value, bool):
        raise ConfigError(f"invalid {name} {value!r}{where}: expected a duration such as 90s, 15m or 24h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ConfigError(
                    f"invalid {name} {value!r}{where}: expected a duration such as 90s, 15m or 24h"
                )
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        raise ConfigError(f"invalid {name} {value!r}{where}: must be a finite, non-negative duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Shortest exact rendering, e.g. 900 -> ``15m``, 5400 -> ``1h30m``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
