"""Commit groups: a run's finished shards merged into Delta as the run goes, each group exactly once.

A group is a list of done shards, numbered from 0 in the order they are cut. Its plan (shards, counts)
is saved in the manifest before any write, its table writes carry the Delta transaction id
(txnAppId = run id, txnVersion = group number), so a repeat after a crash skips what already
committed, and its staged outputs are deleted once the manifest says it is committed. A resumed run
commits its pending group again, then goes on with the shards no group holds yet.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional

from vlclip_core import storage
from vlclip_core.config import VlclipConfig
from vlclip_core.run.report import RunReport, record_run
from vlclip_core.run.state import RunState
from vlclip_core.run.thresholds import breaches

log = logging.getLogger(__name__)

PENDING, COMMITTED = "pending", "committed"


def groups(state: RunState) -> List[Dict]:
    return state.manifest.setdefault("groups", [])


def grouped_shards(state: RunState) -> set:
    return {s for g in groups(state) for s in g["shards"]}


def totals(state: RunState) -> Dict:
    """The run's counts summed over its committed groups: rows, embedded (merged), outcomes, errors."""
    out = {"rows": 0, "embedded": 0, "outcomes": {}, "errors": {}, "breached": []}
    for group in groups(state):
        if group["status"] != COMMITTED:
            continue
        out["rows"] += group["rows"]
        out["embedded"] += group["outcomes"].get("embedded", 0) if group["published"] else 0
        for key in ("outcomes", "errors"):
            for name, count in group[key].items():
                out[key][name] = out[key].get(name, 0) + count
        out["breached"] = group.get("breached") or out["breached"]  # cumulative: the latest says all
    return out


def cumulative_breaches(state: RunState, config: VlclipConfig, group: Dict, final: bool) -> List[str]:
    """The thresholds breached by the run so far, this group included. Items skipped at staging (their
    image failed for good) count at the final group, when every selected item has been processed."""
    done = totals(state)
    outcomes = dict(done["outcomes"])
    for name, count in group["outcomes"].items():
        outcomes[name] = outcomes.get(name, 0) + count
    manifest = state.manifest
    processed = done["rows"] + group["rows"]
    if final and manifest.get("items_skipped"):
        outcomes["skipped_failed_image"] = int(manifest["items_skipped"])
        processed += int(manifest["items_skipped"])
    return breaches(config.job.thresholds, int(manifest.get("items_seen", 0)), processed, outcomes)


class GroupCommitter:
    """Cuts done shards into commit groups (job.commit_every_shards / job.commit_every_minutes) while
    the pipeline runs, and commits them in order in one background thread, so the pipeline is never
    blocked by a MERGE. The last shards are left to `finish`, the final group, which is judged with
    every selected item counted."""

    def __init__(self, spark, tables, state: RunState, config: VlclipConfig, report: RunReport, lock=None):
        self.spark, self.tables, self.state, self.config, self.report = spark, tables, state, config, report
        self.lock = lock  # the warehouse's run lock: checked before each group writes (a lost lease)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlclip-commit-group")
        self._inflight: Optional[Future] = None
        self._lock = threading.Lock()  # the manifest's groups list: cut here, committed in the thread
        grouped = grouped_shards(state)
        self._open = sorted(state.done_shards() - grouped)
        self._grouped = len(grouped)
        self._last_cut = time.monotonic()

    def shard_done(self, shard: int) -> None:
        """Called by the pipeline when a shard is done; raises a failed group's error (e.g. a breach)."""
        self._raise_failed()
        self._open.append(shard)
        if len(self._open) + self._grouped >= len(self.state.shards()):
            return  # the run's last shards: the final group (finish) takes them
        if self._due():
            if self._inflight is not None:
                self._inflight.result()  # one group at a time, in order (txnVersion must grow); raises
            self._inflight = self._pool.submit(self._commit, self._cut(final=False))

    def _due(self) -> bool:
        job = self.config.job
        if job.commit_every_shards and len(self._open) >= job.commit_every_shards:
            return True
        minutes = (time.monotonic() - self._last_cut) / 60
        return bool(job.commit_every_minutes) and minutes >= job.commit_every_minutes

    def _cut(self, final: bool) -> Dict:
        with self._lock:
            entry = {"group": len(groups(self.state)), "shards": sorted(self._open), "status": PENDING,
                     "final": final}
            groups(self.state).append(entry)
            self.state.save()
        self._grouped += len(self._open)
        self._open, self._last_cut = [], time.monotonic()
        log.info("commit group %d: %d shard(s)%s", entry["group"], len(entry["shards"]),
                 " (final)" if final else "")
        return entry

    def _raise_failed(self) -> None:
        """Raise the error of the group in flight if it has ended with one (never waits)."""
        if self._inflight is not None and self._inflight.done() and self._inflight.exception():
            raise self._inflight.exception()

    def close(self, check: bool = False) -> None:
        """Wait for the group in flight (it is idempotent, so a failure elsewhere need not cancel it);
        with `check`, raise its error (a breach found after the pipeline's last shard)."""
        self._pool.shutdown(wait=True)
        if check:
            self._raise_failed()

    def finish(self) -> None:
        """Commit what is left: a group a killed attempt left pending, then the final group."""
        if self._inflight is not None:
            self._inflight.result()
        for entry in groups(self.state):
            if entry["status"] == COMMITTED and not entry.get("cleaned"):
                self._clean(entry)  # an attempt killed between its commit and the delete
            if entry["status"] == PENDING:
                log.warning("commit group %d was not confirmed by an earlier attempt: committing it again",
                            entry["group"])
                self._commit(entry)
        self._open = sorted(self.state.done_shards() - grouped_shards(self.state))
        if self._open or not any(g.get("final") for g in groups(self.state)):
            self._commit(self._cut(final=True))
        self.close()

    def _commit(self, entry: Dict) -> None:
        from vlclip_core.run.commit import commit_group

        start = time.monotonic()
        if self.lock is not None:
            self.lock.ensure_held()
        commit_group(self.spark, self.tables, self.state, self.config, entry, self._lock)
        entry["seconds"] = round(time.monotonic() - start, 3)
        self._clean(entry)
        log.info("commit group %d committed in %.1fs", entry["group"], entry["seconds"])
        if not entry["final"]:
            self._record_progress()

    def _clean(self, entry: Dict) -> None:
        """A committed group's outputs are in Delta now: staging keeps its done-markers and inputs."""
        for shard in entry["shards"]:
            storage.delete_dir(self.state.shard_output(shard))
        with self._lock:
            entry["cleaned"] = True
            self.state.save()

    def _record_progress(self) -> None:
        """The runs row shows a running run's committed items (status running) after each group."""
        done = totals(self.state)
        progress = dataclasses.replace(
            self.report,
            status="running",
            items_selected=int(self.state.manifest.get("items_selected", 0)),
            items_embedded=done["embedded"],
            items_failed=sum(done["errors"].values()),
            message=f"committed {len(groups(self.state))} group(s): {done['rows']} of "
            f"{self.state.manifest.get('items_selected', 0)} selected item(s)",
        )
        with self._lock:
            record_run(self.spark, self.tables, self.state, progress)
