"""Run the embed-catalog job and SIGKILL its own process at a named point (a fault-injection driver).

    python tests/kill_driver.py --kill-after vlclip_core.run.commit:merge_embeddings[:N] -- <job args>
    python tests/kill_driver.py --kill-before vlclip_core.run.job:record_committed[:N] -- <job args>

The function `module:attr` (attr may be `Class.method`) is wrapped so that the process kills itself
with SIGKILL (no cleanup, no finally, no atexit: what a lost node or an OOM kill does) right before
its Nth call (default 1) or right after its Nth call returns. The point is written to the file
named by --marker first, so that a test can tell the kill happened where it meant it to.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import threading


def _kill(marker: str, point: str) -> None:
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(point)
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, after: bool, marker: str) -> None:
    parts = point.split(":")
    module_name, attr, nth = parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 1
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for step in path:
        owner = getattr(owner, step)
    original = getattr(owner, name)
    calls = {"n": 0}
    lock = threading.Lock()

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        with lock:
            calls["n"] += 1
            reached = calls["n"] == nth
        if reached and not after:
            _kill(marker, f"before {point}")
        result = original(*args, **kwargs)
        if reached and after:
            _kill(marker, f"after {point}")
        return result

    setattr(owner, name, wrapper)


def main(argv) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-after")
    parser.add_argument("--kill-before")
    parser.add_argument("--marker", required=True)
    ns, job_args = parser.parse_known_args(argv)
    if job_args and job_args[0] == "--":
        job_args = job_args[1:]
    for point, after in ((ns.kill_after, True), (ns.kill_before, False)):
        if point:
            install(point, after, ns.marker)
    from jobs.embed_catalog import main as job_main

    return job_main(job_args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1:]))
