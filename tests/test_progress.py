"""Progress lines of a long run: done/total, rate, time left, logged at most every `every_s` seconds."""

from __future__ import annotations

import logging

from vlclip_core.pipeline.progress import Progress, format_duration


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert format_duration(0) == "0m00s"
    assert format_duration(59.9) == "0m59s"
    assert format_duration(61) == "1m01s"
    assert format_duration(3 * 3600 + 5 * 60 + 7) == "3h05m07s"
    assert format_duration(-5) == "0m00s"


def test_line_gives_share_rate_time_left_and_extras():
    clock = Clock()
    progress = Progress(200, clock=clock)
    clock.now += 10
    progress.done = 50
    assert progress.line(done_shards=1, shards=4) == (
        "items 50/200 (25.0%), 5.0 items/s, time left 0m30s, done shards 1, shards 4"
    )


def test_line_before_any_time_passed_has_no_estimate():
    progress = Progress(10, clock=Clock())
    assert progress.line() == "items 0/10 (0.0%), 0.0 items/s, time left ?"
    assert Progress(0, clock=Clock()).line() == "items 0/0 (100.0%), 0.0 items/s, time left ?"


def test_update_logs_at_most_every_interval_and_at_the_end(caplog):
    clock = Clock()
    progress = Progress(30, every_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="vlclip.progress"):
        for second, items in ((1, 10), (4, 0), (11, 10), (12, 10)):  # the last update reaches the total
            clock.now = 100.0 + second
            progress.update(items)
    assert [r.getMessage() for r in caplog.records] == [
        "items 20/30 (66.7%), 1.8 items/s, time left 0m05s",
        "items 30/30 (100.0%), 2.5 items/s, time left 0m00s",
    ]
