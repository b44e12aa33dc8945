"""Progress of long work: a bar for a person at a terminal, a line a minute in a log file.

A tqdm bar redraws itself with carriage returns, which fills a log file or a CI log with thousands of
partial lines; with nothing instead, a 30-minute stage says nothing for 30 minutes. So `progress_counter()` gives
a tqdm bar when stderr is a terminal and otherwise a plain line to stderr at most once every
`LOG_EVERY_S` seconds (and one at the end of work that printed any), with the count, the elapsed time and
an estimate of the time left.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

LOG_EVERY_S = 60.0


class LogLines:
    """The part of tqdm's interface the code uses (update, total, close, context manager), as log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.n = 0
        self._began = self._last = time.monotonic()
        self._printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def close(self) -> None:
        if self._printed and self.n:
            self._line(time.monotonic(), final=True)
        self._printed = False  # a second close prints nothing

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self._began
        done = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        text = f"  {self.desc}: {done} {self.unit}s, {_duration(elapsed)}"
        if final:
            text += " (done)"
        elif self.total and self.n:
            text += f", about {_duration(elapsed * (self.total - self.n) / self.n)} left"
        print(text, file=sys.stderr, flush=True)
        self._printed = True

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def progress_counter(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                     leave: bool = True) -> tqdm | LogLines:
    """A progress counter for `total` steps (None: unknown): a bar on a terminal, log lines otherwise,
    nothing at all when not `enabled` (e.g. --quiet, or a library call inside other work)."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=leave)
    return LogLines(total, desc, unit)


def bars_enabled(enabled: bool) -> bool:
    """Whether a third-party progress bar (Lightning's) may draw: only for a person at a terminal."""
    return enabled and sys.stderr.isatty()
