"""Counting instructions under valgrind's callgrind, for the benchmarks that count instead of
timing (timers on a shared machine drift by tens of percent; instruction counts do not)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

__all__ = ["main_thread_instructions", "per_call"]


def main_thread_instructions(script: str, args: list[str], profile: Path) -> int:
    """Instructions (Ir) of the main thread of ``python script args`` under callgrind. Other
    threads (a JWKS server, a replica's heartbeats) run by the wall clock, which valgrind
    stretches unevenly: counted apart (--separate-threads) and left out."""
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}", "--separate-threads=yes",
         "--trace-children=no", sys.executable, script, *args],
        check=True, capture_output=True, timeout=1800,
    )
    summary = re.search(r"^summary:\s+(\d+)", Path(f"{profile}-01").read_text(errors="replace"), re.MULTILINE)
    if summary is None:
        raise RuntimeError(f"no summary line in {profile}")
    return int(summary.group(1))


def per_call(script: str, args: Callable[[int], list[str]], small: int, large: int, profile: Path) -> float:
    """Instructions per call: ``python script *args(n)`` counted for ``small`` and ``large``
    calls, and the difference divided by theirs, so every set-up cost cancels out."""
    counts = [main_thread_instructions(script, args(n), Path(f"{profile}.{n}.out")) for n in (small, large)]
    return (counts[1] - counts[0]) / (large - small)
