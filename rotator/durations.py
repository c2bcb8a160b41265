"""Human durations (``90s``, ``15m``, ``24h``, ``1d``, ``1h30m``, ``500ms``) and moments (UTC ISO 8601)."""

from __future__ import annotations

import datetime as dt
import math
import re

from .errors import ConfigError

__all__ = ["parse_duration", "parse_moment", "format_duration", "format_time", "MAX_DURATION"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Parts in descending unit order, each unit at most once, ASCII digits only: 1h30m, 1d12h, 2m500ms.
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?",
    re.ASCII,
)
_BARE = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_ORDER = ("d", "h", "m", "s", "ms")
# Longest duration accepted anywhere: ten years.
MAX_DURATION = 3650 * 86400.0


def parse_duration(value: object, *, name: str = "duration", source: str | None = None) -> float:
    """Return seconds. Bare numbers are seconds; anything else must be unit-tagged parts."""
    where = f" (from {source})" if source else ""
    expected = "expected a duration such as 90s, 15m or 24h"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        shown = value if isinstance(value, (bool, list, dict)) else type(value).__name__
        raise ConfigError(f"invalid {name} {shown!r}{where}: {expected}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        if _BARE.fullmatch(text):
            seconds = float(text)
        else:
            match = _DURATION.fullmatch(text)
            if not text or match is None or not any(match.groups()):
                raise ConfigError(f"invalid {name} {value!r}{where}: {expected} (units in the order d h m s ms, each once)")
            seconds = sum(float(part) * _UNITS[unit] for part, unit in zip(match.groups(), _ORDER) if part)
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        raise ConfigError(f"invalid {name} {value!r}{where}: must be a finite, non-negative duration")
    if seconds > MAX_DURATION:
        raise ConfigError(f"invalid {name} {value!r}{where}: longer than the limit of {MAX_DURATION / 86400:.0f}d")
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


def format_time(ts: float) -> str:
    """Seconds since the epoch as UTC ISO 8601 to the second; out-of-range values as numbers."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{ts:.0f} (out of range)"


def parse_moment(text: str, name: str, now: float) -> float:
    """A moment, in seconds since the epoch: seconds since the epoch, an ISO 8601 time (UTC
    unless it says otherwise), or a duration from ``now`` (30m, 7d); ConfigError naming
    ``name`` otherwise."""
    value = text.strip()
    if not value.isascii():  # float() and fromisoformat() take any script's digits
        raise ConfigError(f"{name} {text!r} is not a time: use ASCII digits")
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and "_" not in value:
            return number
        raise ConfigError(f"{name} {text!r} is not a time")
    if value[:1].isdigit() and "-" in value[:5] and len(value) >= 10:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise ConfigError(f"{name} {text!r} is not an ISO 8601 time: {e}") from e
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    try:
        return now + parse_duration(value, name=name)
    except ConfigError:
        raise ConfigError(
            f"{name} {text!r} is neither seconds since the epoch, an ISO 8601 time nor a duration like 7d"
        ) from None
