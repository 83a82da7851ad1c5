"""Scale benchmark (`make bench-scale`): null-model backfills, a SIGKILLed-and-resumed backfill, the no-op
nightly, a MERGE of 100k changes into tables of 1M and 10M rows, and an N x 512 index export.

Each measured run is a child process of its own (`python -m benchmarks.scale backfill|killresume|...`), so
its lifetime peak RSS is the run's; the parent collects one JSON line per child and writes
<out>/scale.json and <out>/scale.md. Not part of the test suite.

    python -m benchmarks.scale --sizes 100000,1000000 --kill-items 1000000 --noop-items 10000000 \
        --merge-sizes 1000000,10000000 --merge-changed 100000 --index-items 1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.measure import RssSampler

log = logging.getLogger(__name__)

PROFILE = "conf/null.yaml"
IMAGE_POOL = 1000  # distinct tiny images; item i shows image i % IMAGE_POOL
IMAGE_SIDE = 24
ROWS_PER_FILE = 100_000
INDEX_DIM = 512
INDEX_MODEL_VERSION = "bench-scale-index"
K = 10


def tiny_image_catalog(root: str, n_items: int) -> str:
    """A catalog of n_items rows over IMAGE_POOL tiny PNG files (cheap to draw, real to fetch and decode)."""
    from PIL import Image

    from vlclip_core.tools.sample_catalog import catalog_schema

    path = os.path.join(root, f"catalog-{n_items}")
    if os.path.exists(os.path.join(path, "_READY")):
        return os.path.abspath(path)
    images = os.path.join(root, "images")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(IMAGE_POOL):
        file = os.path.join(images, f"{i:04d}.png")
        if not os.path.exists(file):
            Image.fromarray(rng.integers(0, 255, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)).save(file)
    os.makedirs(path, exist_ok=True)
    for part, start in enumerate(range(0, n_items, ROWS_PER_FILE)):
        ids = range(start, min(start + ROWS_PER_FILE, n_items))
        table = catalog_rows(ids, images, catalog_schema())
        pq.write_table(table, os.path.join(path, f"part-{part:05d}.parquet"))
    open(os.path.join(path, "_READY"), "w", encoding="utf-8").close()
    return os.path.abspath(path)


def catalog_rows(ids, images: str, schema: pa.Schema) -> pa.Table:
    types = ("mug", "lamp", "shoe", "bag")
    columns = {
        "item_id": [f"SCALE-{i:09d}" for i in ids],
        "title": [f"Brand{i % 97} {types[i % 4]} model {i}" for i in ids],
        "description": [f"A {types[i % 4]} for everyday use, item {i}." for i in ids],
        "product_type": [types[i % 4] for i in ids],
        "attributes": [[("colour", "red")] for _ in ids],
        "image_uri": [os.path.abspath(os.path.join(images, f"{i % IMAGE_POOL:04d}.png")) for i in ids],
    }
    missing = {f.name: pa.nulls(len(ids), f.type) for f in schema if f.name not in columns}
    return pa.table({f.name: missing.get(f.name) or pa.array(columns[f.name], f.type) for f in schema})


class StagingPeak:
    """Largest total size of the files under the staging directory, sampled every interval_s in a thread."""

    def __init__(self, path: str, interval_s: float = 1.0):
        self.path, self.interval_s, self.peak_bytes = path, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="staging-peak", daemon=True)

    def __enter__(self) -> "StagingPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, tree_bytes(self.path))


def tree_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass  # a staged file removed while walking
    return total


def backfill(args) -> dict:
    """One null-profile backfill of a fresh warehouse, then the same job again (the no-op nightly)."""
    from benchmarks.delta_bench import _anti_join_seconds
    from vlclip_core.config import load_config
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run
    from vlclip_core.warehouse.spark_session import get_spark
    from vlclip_core.warehouse.tables import Tables

    catalog = tiny_image_catalog(args.data, args.items)
    warehouse = os.path.abspath(os.path.join(args.work, f"wh-{args.items}"))
    subprocess.run(["rm", "-rf", warehouse], check=True)
    paths = (f"catalog.path={catalog}", f"warehouse.path={warehouse}")
    config = load_config(PROFILE, paths + tuple(args.set))
    spark = get_spark(config.spark)
    with RssSampler() as rss, StagingPeak(config.warehouse.staging()) as staging:
        start = time.perf_counter()
        report = run_job(config, spark)
        backfill_s = time.perf_counter() - start
    start = time.perf_counter()
    noop = run_job(config, spark)
    noop_s = time.perf_counter() - start
    tables = Tables(spark, config.warehouse)
    plain_s = _anti_join_seconds(spark, catalog, tables, config.model_version)
    counted = tables.read("embeddings").where(f"model_version = '{config.model_version}'").count()
    groups = open_run(config.warehouse.staging(), report.run_id).manifest.get("groups", [])
    return {
        "items": args.items,
        "embedded": report.items_embedded,
        "failed": report.items_failed,
        "rows_counted_with_spark": counted,
        "backfill_s": round(backfill_s, 1),
        "items_per_s": round(args.items / backfill_s, 1),
        "phases_s": getattr(report, "phase_seconds", None),
        "rss_mib": rss.peaks.as_dict(),
        "peak_staged_bytes": staging.peak_bytes,
        "commit_groups": len(groups),
        "group_commit_s_first_last": [g.get("seconds") for g in (groups[0], groups[-1])] if groups else None,
        "noop_s": round(noop_s, 1),
        "noop_selected": noop.items_selected,
        "plain_anti_join_s": round(plain_s, 1),
        "noop_over_plain": round(noop_s / plain_s, 2) if plain_s else None,
    }


def kill_resume(args) -> dict:
    """A null backfill SIGKILLed (its whole process group) once its first commit group is in Delta, then
    the same command again: the resumed run must leave every item embedded exactly once (Spark count)."""
    import signal

    from vlclip_core.config import load_config
    from vlclip_core.warehouse.spark_session import get_spark
    from vlclip_core.warehouse.tables import Tables

    catalog = tiny_image_catalog(args.data, args.items)
    warehouse = os.path.abspath(os.path.join(args.work, f"wh-kill-{args.items}"))
    subprocess.run(["rm", "-rf", warehouse], check=True)
    sets = [f"catalog.path={catalog}", f"warehouse.path={warehouse}"] + list(args.set)
    argv = [sys.executable, "-m", "jobs.embed_catalog", "--config", PROFILE, "--mode", "backfill"]
    argv += [x for v in sets for x in ("--set", v)]
    config = load_config(PROFILE, tuple(sets))
    start = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(argv, start_new_session=True, **quiet)
    committed = 0
    while proc.poll() is None and time.perf_counter() - start < args.timeout_s and not committed:
        time.sleep(1.0)
        committed = _committed_groups(config.warehouse.staging())
    killed_after_s = time.perf_counter() - start
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resume_start = time.perf_counter()
    resumed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume_s = time.perf_counter() - resume_start
    spark = get_spark(config.spark)
    emb = Tables(spark, config.warehouse).read("embeddings")
    emb = emb.where(f"model_version = '{config.model_version}'")
    rows, distinct = emb.count(), emb.select("item_id").distinct().count()
    return {
        "items": args.items,
        "killed_after_s": round(killed_after_s, 1),
        "groups_committed_at_kill": committed,
        "killed_rc": proc.returncode,
        "resume_rc": resumed.returncode,
        "resume_s": round(resume_s, 1),
        "rows_counted_with_spark": rows,
        "distinct_item_ids": distinct,
        "every_item_once": rows == distinct == args.items,
    }


def _committed_groups(staging: str) -> int:
    """Commit groups confirmed in the manifest of the one run under `staging` (0 while there is none)."""
    for name in os.listdir(staging) if os.path.isdir(staging) else []:
        path = os.path.join(staging, name, "manifest.json")
        try:
            with open(path, encoding="utf-8") as fh:
                groups = json.load(fh).get("groups", [])
        except (OSError, ValueError):  # not there yet, or being rewritten
            continue
        return sum(1 for g in groups if g.get("status") == "committed")
    return 0


def noop(args) -> dict:
    """The no-op nightly on an args.items catalog whose embeddings are current (rows written directly,
    as `nightly_noop` of `make bench` does) vs a plain scan + anti-join, args.repeats interleaved repeats."""
    from benchmarks.context import BenchOptions
    from benchmarks.delta_bench import nightly_noop

    options = BenchOptions(out=args.work, noop_items=args.items, noop_repeats=args.repeats, seed=args.seed)
    figures, rss = _bench_figures(nightly_noop, options)
    return {
        "items": args.items,
        "noop_s": figures["vlclip_noop"]["total_s"],
        "plain_anti_join_s": figures["plain_anti_join_s"],
        "ratio_noop_over_plain": figures["wall_ratio_vlclip_over_plain"],
        "rss_mib": rss.peaks.as_dict(),
    }


def merge(args) -> dict:
    """MERGE of args.merge_changed changed items into embeddings tables of each of args.merge_sizes rows
    (`merge_cost` of `make bench`: the changes spread over the whole id range, each repeat on a fresh copy
    of the table), and the ratio largest / smallest."""
    from benchmarks.context import BenchOptions
    from benchmarks.delta_bench import _files_touched, merge_cost

    options = BenchOptions(
        out=args.work,
        merge_sizes=tuple(args.merge_sizes),
        merge_changed=args.merge_changed,
        merge_dim=args.merge_dim,
        repeats=args.repeats,
        seed=args.seed,
    )
    figures, rss = _bench_figures(merge_cost, options)
    return {
        "changed": args.merge_changed,
        "dim": args.merge_dim,
        "seconds_by_size": {n: f["seconds"] for n, f in figures["by_size"].items()},
        "files_touched_by_size": {
            n: [_files_touched(r["metrics"]) for r in f["runs"]] for n, f in figures["by_size"].items()
        },
        "ratio_largest_over_smallest": figures["wall_ratio_large_over_small"],
        "rss_mib": rss.peaks.as_dict(),
    }


def _bench_figures(measure, options):
    """(figures, RSS peaks) of one `make bench` measurement run here with its own Spark session."""
    from benchmarks.context import BenchContext
    from benchmarks.run import start_spark

    ctx = BenchContext(options)
    ctx.spark = start_spark()
    with RssSampler() as rss:
        figures = measure(ctx)["figures"]
    return figures, rss


def unit_chunk(seed: int, chunk: int, rows: int, dim: int) -> np.ndarray:
    vectors = np.random.default_rng([seed, chunk]).standard_normal((rows, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunks(n: int, size: int):
    for number, start in enumerate(range(0, n, size)):
        yield number, start, min(size, n - start)


def write_index_table(spark, warehouse: str, n: int, seed: int) -> None:
    """An embeddings table of n random unit 512-d vectors, written chunk by chunk (never held whole)."""
    from vlclip_core.config import WarehouseConfig
    from vlclip_core.warehouse.tables import Tables, table_schema

    tables = Tables(spark, WarehouseConfig(path=warehouse))
    tables.ensure("embeddings")
    staging = os.path.join(os.path.dirname(warehouse), os.path.basename(warehouse) + "-vectors")
    os.makedirs(staging, exist_ok=True)
    for number, start, rows in chunks(n, ROWS_PER_FILE):
        vectors = unit_chunk(seed, number, rows, INDEX_DIM)
        flat = pa.array(vectors.reshape(-1))
        offsets = pa.array(np.arange(0, rows * INDEX_DIM + 1, INDEX_DIM, dtype=np.int32))
        table = pa.table(
            {
                "item_id": [f"VEC-{i:09d}" for i in range(start, start + rows)],
                "model_version": [INDEX_MODEL_VERSION] * rows,
                "content_hash": ["h"] * rows,
                "embedding": pa.ListArray.from_arrays(offsets, flat),
            }
        )
        pq.write_table(table, os.path.join(staging, f"part-{number:05d}.parquet"))
    schema = table_schema(spark, "embeddings")
    frame = spark.read.parquet(staging)
    columns = [frame[f.name].cast(f.dataType) if f.name in frame.columns else _null(f) for f in schema]
    frame.select(columns).write.format("delta").mode("append").save(tables.location("embeddings"))


def _null(field):
    from pyspark.sql import functions as F

    return F.lit(None).cast(field.dataType).alias(field.name)


def exact_top_k(queries: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Row numbers of each query's K largest inner products over the regenerated table, chunk by chunk."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), K), dtype=np.int64)
    for number, start, rows in chunks(n, ROWS_PER_FILE):
        scores = queries @ unit_chunk(seed, number, rows, INDEX_DIM).T
        merged = np.concatenate([best_scores, scores], axis=1)
        rows_here = np.broadcast_to(np.arange(start, start + rows), scores.shape)
        ids = np.concatenate([best_rows, rows_here], axis=1)
        top = np.argsort(-merged, axis=1, kind="stable")[:, :K]
        best_scores, best_rows = np.take_along_axis(merged, top, 1), np.take_along_axis(ids, top, 1)
    return best_rows


def export(args) -> dict:
    """Export an index of args.items x 512 vectors (index.kind from --set), then recall@10 vs exact."""
    from vlclip_core.config import WarehouseConfig, load_config
    from vlclip_core.index.ann import ItemIndex
    from vlclip_core.index.export import export_one, table_version
    from vlclip_core.warehouse.spark_session import get_spark
    from vlclip_core.warehouse.tables import Tables

    config = load_config(PROFILE, ("catalog.path=unused",) + tuple(args.set))
    spark, cfg = get_spark(config.spark), config.index
    warehouse = os.path.abspath(os.path.join(args.work, f"index-wh-{args.items}"))
    if not os.path.exists(os.path.join(warehouse, "embeddings", "_delta_log")):
        write_index_table(spark, warehouse, args.items, args.seed)
    tables = Tables(spark, WarehouseConfig(path=warehouse))
    directory = os.path.join(args.work, f"index-{args.items}-{cfg.kind}")
    with RssSampler() as rss:
        start = time.perf_counter()
        version = table_version(tables, "embeddings")
        result = export_one(tables, INDEX_MODEL_VERSION, version, cfg, directory, full=True)
        export_s = time.perf_counter() - start
    index = ItemIndex.load(directory, cfg.ef_search, cfg.nprobe)
    queries = unit_chunk(args.seed + 1, 0, args.queries, INDEX_DIM)
    truth = exact_top_k(queries, args.items, args.seed)
    found = [[int(h.split("-")[1]) for h, _ in row] for row in index.search(queries, K)]
    recall = float(np.mean([len(set(f) & set(t)) for f, t in zip(found, truth.tolist())])) / K
    return {
        "items": args.items,
        "kind": cfg.kind,
        "export_s": round(export_s, 1),
        "vectors_per_s": round(args.items / export_s, 1),
        "rss_mib": rss.peaks.as_dict(),
        "index_files_bytes": tree_bytes(directory),
        "recall_at_10": round(recall, 4),
        "queries": args.queries,
        "indexed": result.items,
    }


def child(command: str, args, extra: List[str]) -> Optional[dict]:
    """Run one measured run in its own process (with a timeout); its last stdout line is the JSON."""
    argv = [sys.executable, "-m", "benchmarks.scale", command, "--data", args.data, "--work", args.work]
    argv += extra
    log.info("scale: %s", " ".join(argv[3:]))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.error("scale %s timed out after %ss", command, args.timeout_s)
        return {"timed_out_after_s": args.timeout_s, "argv": argv[3:]}
    if done.returncode:
        log.error("scale %s failed (rc %d): %s", command, done.returncode, done.stderr[-3000:])
        return {"failed_rc": done.returncode, "argv": argv[3:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def orchestrate(args) -> dict:
    figures: Dict[str, object] = {"machine": machine(), "backfill": [], "index": []}
    for size in args.sizes:
        figures["backfill"].append(child("backfill", args, ["--items", str(size)] + _sets(args.set)))
    if args.kill_items:
        extra = ["--items", str(args.kill_items)] + _sets(args.set)
        figures["kill_resume"] = child("killresume", args, extra)
    if args.noop_items:
        extra = ["--items", str(args.noop_items), "--repeats", str(args.repeats)]
        figures["noop_big"] = child("noop", args, extra)
    if args.merge_sizes:
        extra = ["--merge-sizes", ",".join(map(str, args.merge_sizes)), "--merge-changed",
                 str(args.merge_changed), "--merge-dim", str(args.merge_dim), "--repeats", str(args.repeats)]
        figures["merge"] = child("merge", args, extra)
    for kind in args.index_kinds:
        extra = ["--items", str(args.index_items), "--queries", str(args.queries)]
        sets = _sets([f"index.kind={kind}"] + args.index_set)
        figures["index"].append(child("export", args, extra + sets))
    return figures


def _sets(values: List[str]) -> List[str]:
    return [x for v in values for x in ("--set", v)]


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(v, 1) for v in load]}


def markdown(figures: dict) -> str:
    lines = ["| run | items | figures |", "|---|---|---|"]
    for row in figures.get("backfill", []):
        lines.append(f"| null backfill + no-op | {row.get('items')} | `{json.dumps(row, sort_keys=True)}` |")
    if figures.get("kill_resume"):
        row = figures["kill_resume"]
        lines.append(f"| SIGKILL + resume | {row.get('items')} | `{json.dumps(row, sort_keys=True)}` |")
    if figures.get("noop_big"):
        row = figures["noop_big"]
        lines.append(f"| no-op nightly | {row.get('items')} | `{json.dumps(row, sort_keys=True)}` |")
    if figures.get("merge"):
        row = figures["merge"]
        lines.append(f"| MERGE of changes | {row.get('changed')} | `{json.dumps(row, sort_keys=True)}` |")
    for row in figures.get("index", []):
        lines.append(f"| index export | {row.get('items')} | `{json.dumps(row, sort_keys=True)}` |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="all",
        choices=("all", "backfill", "killresume", "noop", "merge", "export"),
    )
    parser.add_argument("--out", default="bench_out/scale")
    parser.add_argument("--data", help="catalogs and images (default <out>/data)")
    parser.add_argument("--work", help="warehouses and indexes (default <out>/work)")
    parser.add_argument("--sizes", type=_ints, default=[100_000, 1_000_000], help="backfill sizes")
    parser.add_argument(
        "--kill-items", type=int, default=1_000_000, help="backfill SIGKILLed after its first group; 0: skip"
    )
    parser.add_argument("--noop-items", type=int, default=10_000_000, help="no-op nightly catalog; 0: skip")
    parser.add_argument(
        "--merge-sizes", type=_ints, default=[1_000_000, 10_000_000], help="embeddings tables merged into"
    )
    parser.add_argument("--merge-changed", type=int, default=100_000, help="changed items of each MERGE")
    parser.add_argument("--merge-dim", type=int, default=32, help="dimension of the tables' three vectors")
    parser.add_argument("--index-items", type=int, default=1_000_000)
    parser.add_argument("--index-kinds", type=lambda v: [k for k in v.split(",") if k], default=["ivfpq"])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--items", type=int, default=0, help="(child runs) items of this run")
    parser.add_argument("--repeats", type=int, default=3, help="no-op repeats (interleaved with the scan)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=int, default=6 * 3600, help="per child run")
    parser.add_argument("--set", action="append", default=[], help="config override of the backfill runs")
    parser.add_argument("--index-set", action="append", default=[], help="index.* override of the exports")
    args = parser.parse_args(argv)
    args.data = os.path.abspath(args.data or os.path.join(args.out, "data"))
    args.work = os.path.abspath(args.work or os.path.join(args.out, "work"))
    return args


def _ints(value: str) -> List[int]:
    return [int(v) for v in value.split(",") if v]


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.makedirs(args.work, exist_ok=True)
    if args.command != "all":
        commands = {
            "backfill": backfill, "killresume": kill_resume, "noop": noop, "merge": merge, "export": export
        }
        run = commands[args.command]
        print(json.dumps(run(args), sort_keys=True))
        return 0
    figures = orchestrate(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scale.json"), "w", encoding="utf-8") as fh:
        json.dump(figures, fh, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "scale.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(figures))
    print(markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
