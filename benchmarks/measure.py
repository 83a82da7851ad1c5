"""Measuring helpers: repeat statistics, peak-RSS sampling, pipeline batch marks, machine description."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import psutil

MIB = 1024 * 1024


def spread(values: Sequence[float]) -> Dict[str, object]:
    """Median, min and max of repeated measurements, with the values themselves."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "values": [round(v, 4) for v in values],
    }


def ratio(
    numerators: Sequence[Optional[float]], denominators: Sequence[Optional[float]]
) -> Dict[str, object]:
    """Ratio of medians, and the spread of the paired per-repeat ratios (repeats were interleaved).

    Missing figures (None) are left out; with none left the ratio is None.
    """
    nums = [a for a in numerators if a is not None]
    dens = [b for b in denominators if b]
    if not nums or not dens:
        return {"of_medians": None, "paired": spread([])}
    paired = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    return {
        "of_medians": round(statistics.median(nums) / statistics.median(dens), 4),
        "paired": spread(paired),
    }


@dataclass
class RssPeaks:
    """Peak resident memory (MiB) seen while sampling."""

    driver_mib: float = 0.0
    jvm_mib: float = 0.0
    ray_workers_total_mib: float = 0.0
    ray_worker_max_mib: float = 0.0
    ray_workers_seen: int = 0
    samples: int = 0
    _pids: set = field(default_factory=set, repr=False)

    def as_dict(self) -> Dict[str, float]:
        return {
            k: round(v, 1) if isinstance(v, float) else v
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }


class RssSampler:
    """Samples the driver, its JVM children and Ray's worker processes (`ray::...`) in a thread."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peaks = RssPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._me = psutil.Process()

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """One sample: this process, and its descendants (the Spark JVM, Ray's workers `ray::...`)."""
        peaks = self.peaks
        peaks.samples += 1
        peaks.driver_mib = max(peaks.driver_mib, _rss(self._me))
        jvm, workers = 0.0, {}
        for proc, title in _descendants(self._me):
            if "java" in title:
                jvm += _rss(proc)
            elif title.startswith("ray::"):
                workers[proc.pid] = _rss(proc)
        peaks._pids.update(workers)
        peaks.ray_workers_seen = len(peaks._pids)
        peaks.jvm_mib = max(peaks.jvm_mib, jvm)
        peaks.ray_workers_total_mib = max(peaks.ray_workers_total_mib, sum(workers.values()))
        peaks.ray_worker_max_mib = max([peaks.ray_worker_max_mib, *workers.values()])


def _rss(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / MIB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def _descendants(proc: psutil.Process) -> List[tuple]:
    """(process, first word of its command line) of every descendant; other users' processes are skipped."""
    try:
        kids = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for kid in kids:
        try:
            cmdline = kid.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.append((kid, cmdline[0] if cmdline else ""))
    return out


def driver_peak_rss_mib() -> float:
    """Lifetime peak RSS of this process (ru_maxrss is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextlib.contextmanager
def pipeline_marks() -> Iterator[List[tuple]]:
    """Record (perf_counter, rows) of every shard-writer summary that run_job's pipeline receives."""
    from vlclip_core.pipeline import runner

    real = runner.summaries
    marks: List[tuple] = []

    def recording(*args, **kwargs):
        for summary in real(*args, **kwargs):
            marks.append((time.perf_counter(), int(summary["rows"])))
            yield summary

    runner.summaries = recording
    try:
        yield marks
    finally:
        runner.summaries = real


def machine_info() -> Dict[str, object]:
    """CPU count and model, RAM, Python and library versions, the git commit of the working tree."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{
            f"{name}_version": _version(name)
            for name in ("torch", "ray", "pyspark", "delta", "transformers", "open_clip", "pyarrow")
        },
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    from importlib import metadata

    dist = {"delta": "delta-spark", "open_clip": "open_clip_torch"}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _git_commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown (no commit)"


def _git_dirty() -> bool:
    return bool(_git("status", "--porcelain"))
