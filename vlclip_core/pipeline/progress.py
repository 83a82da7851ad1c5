"""Progress lines a person watching a long backfill can read: done/total, rate, time left."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("vlclip.progress")


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Counts finished items and logs at most every `every_s` seconds (and at the end)."""

    def __init__(self, total: int, every_s: float = 10.0, clock=time.monotonic):
        self.total = total
        self.every_s = every_s
        self.clock = clock
        self.start = clock()
        self.last_log = self.start
        self.done = 0

    def update(self, n: int, **extra) -> None:
        self.done += n
        now = self.clock()
        if now - self.last_log >= self.every_s or self.done >= self.total:
            self.last_log = now
            log.info(self.line(**extra))

    def rate(self) -> float:
        elapsed = self.clock() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, **extra) -> str:
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_duration(left) if left == left else "?"
        parts = [f"items {self.done}/{self.total} ({pct:.1f}%)", f"{rate:.1f} items/s", f"time left {eta}"]
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in extra.items()]
        return ", ".join(parts)
