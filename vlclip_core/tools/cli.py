"""The `vlclip` command: helper sub-commands around the job (tiny models, sample catalog, contact sheet)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from vlclip_core.logs import setup_logging


def _warm_spark(args: argparse.Namespace) -> int:
    """Start a local Spark session with Delta once, so the Delta jars land in the Ivy cache."""
    from vlclip_core.config import SparkConfig
    from vlclip_core.warehouse.spark_session import get_spark

    spark = get_spark(SparkConfig(app_name="vlclip-warm"))
    spark.range(1).count()
    spark.stop()
    return 0


def _build_tiny_models(args: argparse.Namespace) -> int:
    from vlclip_core.models.tiny import build_tiny_models

    paths = build_tiny_models(args.out, seed=args.seed)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    return 0


def _sample_catalog(args: argparse.Namespace) -> int:
    from vlclip_core.tools.sample_catalog import make_sample_catalog

    print(make_sample_catalog(args.out, n_items=args.items, seed=args.seed))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from vlclip_core.config import load_config
    from vlclip_core.tools.inspect_run import write_contact_sheet

    config = load_config(args.config, tuple(args.overrides))
    print(write_contact_sheet(config, args.run_id, args.out, args.limit))
    return 0


def _unlock(args: argparse.Namespace) -> int:
    from vlclip_core.config import load_config
    from vlclip_core.warehouse.locks import DeltaRunLock, lock_root
    from vlclip_core.warehouse.spark_session import get_spark

    config = load_config(args.config, tuple(args.overrides))
    lock = DeltaRunLock(get_spark(config.spark), lock_root(config.warehouse), "unlock")
    holder = lock.release_by_hand()
    print(f"removed the run lock held by {holder}" if holder else "no run lock was held")
    return 0


def _abandon(args: argparse.Namespace) -> int:
    """Abandon an unfinished run for good: it is never resumed and never merged."""
    from vlclip_core.config import load_config
    from vlclip_core.run.lifecycle import abandon
    from vlclip_core.run.state import FINAL, open_run
    from vlclip_core.warehouse.spark_session import get_spark
    from vlclip_core.warehouse.tables import Tables

    config = load_config(args.config, tuple(args.overrides))
    state = open_run(config.warehouse.staging(), args.run_id)
    if state is None:
        print(f"no run {args.run_id} under {config.warehouse.staging()}", file=sys.stderr)
        return 1
    if state.status in FINAL:
        print(f"run {args.run_id} is already {state.status}", file=sys.stderr)
        return 1
    spark = get_spark(config.spark)
    abandon(spark, Tables(spark, config.warehouse), state, args.reason)
    print(f"abandoned run {args.run_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlclip")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("warm-spark", help="resolve the Delta jars into the local Ivy cache").set_defaults(
        fn=_warm_spark
    )
    models = sub.add_parser("build-tiny-models", help="build the offline tiny models (seeded random weights)")
    models.add_argument("--out", default="models/tiny")
    models.add_argument("--seed", type=int, default=0)
    models.set_defaults(fn=_build_tiny_models)
    sample = sub.add_parser("sample-catalog", help="generate the sample catalog with busy-scene images")
    sample.add_argument("--out", default="data/sample")
    sample.add_argument("--items", type=int, default=300)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(fn=_sample_catalog)
    inspect = sub.add_parser("inspect", help="contact sheet (HTML or PNG) of a run's items: boxes and texts")
    inspect.add_argument("--config", required=True)
    inspect.add_argument("--run-id", help="default: the latest succeeded run")
    inspect.add_argument("--out", default="build/contact_sheet.html")
    inspect.add_argument("--limit", type=int, default=24)
    inspect.add_argument("--set", dest="overrides", action="append", default=[])
    inspect.set_defaults(fn=_inspect)
    unlock = sub.add_parser(
        "unlock", help="remove a Delta run lock (warehouse.run_lock=delta) whose run died"
    )
    unlock.add_argument("--config", required=True)
    unlock.add_argument("--set", dest="overrides", action="append", default=[])
    unlock.set_defaults(fn=_unlock)
    sub.add_parser(
        "submit",
        add_help=False,
        help="spark-submit a job with the Delta package: vlclip submit [--job embed|train|evaluate|export] "
        "[spark-submit options] -- [job options]",
    )
    drop = sub.add_parser("abandon", help="abandon an unfinished run: it is never resumed nor merged")
    drop.add_argument("run_id")
    drop.add_argument("--config", required=True)
    drop.add_argument("--reason", default="abandoned by an operator (vlclip abandon)")
    drop.add_argument("--set", dest="overrides", action="append", default=[])
    drop.set_defaults(fn=_abandon)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    setup_logging("INFO")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["submit"]:  # its options are spark-submit's and the job's: not parsed here
        from vlclip_core.tools.submit import main as submit_main

        return submit_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
