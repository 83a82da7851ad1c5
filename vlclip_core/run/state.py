"""Run identity and staged state: run ids, the run directory, its manifest, shard done-markers, resume."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from vlclip_core import storage

log = logging.getLogger(__name__)

# manifest status, in order; FAILED ends a run that breached its thresholds, ABANDONED one that a later
# committed run superseded or that an operator dropped (`vlclip abandon`): neither is ever resumed
STAGING, STAGED, PROCESSED, COMMITTED = "staging", "staged", "processed", "committed"
FAILED, ABANDONED = "failed", "abandoned"
FINAL = (COMMITTED, FAILED, ABANDONED)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_run_id(mode: str) -> str:
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{mode}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunState:
    """One run's directory under the staging root:

    manifest.json, input/shard_id=K/ (work set, Spark), output/shard_id=K/ (results, Ray),
    done/shard-K.json (shard finished), catalog_errors/ (invalid catalog rows).
    """

    root: str
    manifest: Dict = field(default_factory=dict)
    created: bool = False  # made by this attempt (create_run), not found on disk: not a resumed run
    # done-markers never change once written: each is read from storage at most once per process
    _summaries: Dict[int, Dict] = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def started_at(self) -> dt.datetime:
        """When the run was created (its first attempt): the watermark its MERGE is compared by."""
        return dt.datetime.fromisoformat(self.manifest["started_at"])

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def save(self, **updates) -> None:
        self.manifest.update(updates)
        storage.write_json(self.path("manifest.json"), self.manifest)

    def shards(self) -> Dict[int, int]:
        return {int(k): int(v) for k, v in self.manifest.get("shards", {}).items()}

    def done_shards(self) -> Set[int]:
        names = storage.list_dir(self.path("done"))
        return {
            int(n[len("shard-") : -len(".json")])
            for n in names
            if n.startswith("shard-") and n.endswith(".json")
        }

    def pending_shards(self) -> List[int]:
        done = self.done_shards()
        return sorted(s for s in self.shards() if s not in done)

    def shard_input(self, shard: int) -> str:
        return self.path("input", f"shard_id={shard}")

    def shard_output(self, shard: int) -> str:
        return self.path("output", f"shard_id={shard}")

    def mark_shard_done(self, shard: int, summary: Dict) -> None:
        storage.write_json(self.path("done", f"shard-{shard}.json"), summary)
        self._summaries[shard] = dict(summary)

    def done_summaries(self) -> List[Dict]:
        """The done-markers' summaries (one listing; markers this process wrote or read are not read
        again: at the end of a 1000-shard run on an object store that is 1000 GETs saved per reader)."""
        out = []
        for shard in sorted(self.done_shards()):
            if shard not in self._summaries:
                self._summaries[shard] = storage.read_json(self.path("done", f"shard-{shard}.json"))
            out.append(self._summaries[shard])
        return out

    def clear_partial_outputs(self) -> None:
        """Remove outputs of unfinished shards (a killed run may have left half of one)."""
        for shard in self.pending_shards():
            storage.delete_dir(self.shard_output(shard))


def create_run(staging: str, run_id: str, mode: str, model_version: str, config_hash: str) -> RunState:
    state = RunState(storage.join(staging, run_id), created=True)
    if storage.exists(state.path("manifest.json")):
        raise FileExistsError(f"run {run_id} already exists under {staging}")
    state.save(
        run_id=run_id,
        mode=mode,
        model_version=model_version,
        config_hash=config_hash,
        status=STAGING,
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        shards={},
    )
    return state


def open_run(staging: str, run_id: str) -> Optional[RunState]:
    root = storage.join(staging, run_id)
    if not storage.exists(storage.join(root, "manifest.json")):
        return None
    return RunState(root, storage.read_json(storage.join(root, "manifest.json")))


def find_unfinished(staging: str, mode: str, model_version: str) -> Optional[RunState]:
    """The newest run of this mode and model_version that never committed (resumable)."""
    for name in reversed(storage.list_dir(staging)):
        state = open_run(staging, name) if not name.startswith("_") else None
        if (
            state
            and state.status not in FINAL
            and state.manifest.get("mode") == mode
            and state.manifest.get("model_version") == model_version
        ):
            return state
    return None
