"""Entry point that builds/updates the similar-items ANN indexes from `embeddings` and prints neighbours.

Runs under spark-submit or `python -m jobs.export_index`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from vlclip_core.config import load_config
from vlclip_core.logs import setup_logging
from vlclip_core.tools.entry import add_override_args, run_entry


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export_index",
        description="Build or update one FAISS index (index.kind: hnsw | ivfpq) per "
        "model_version from the embeddings Delta table (incrementally from its "
        "change data feed), or print an item's nearest neighbours.",
    )
    parser.add_argument("--config", required=True, help="YAML profile, e.g. conf/tiny.yaml")
    parser.add_argument("--warehouse", help="overrides warehouse.path")
    parser.add_argument(
        "--out", help="index root directory; overrides index.path (default <warehouse>/_index)"
    )
    add_override_args(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="bring the indexes to the table's latest version")
    build.add_argument(
        "--model-version", action="append", default=[], help="repeatable; default: all in the table"
    )
    build.add_argument(
        "--full", action="store_true", help="rebuild from the table instead of the change feed"
    )
    similar = commands.add_parser("similar", help="print the k nearest items of an item")
    similar.add_argument("--model-version", required=True)
    similar.add_argument("--item-id", required=True)
    similar.add_argument("-k", type=int, default=10)
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace):
    flags = {"warehouse.path": args.warehouse, "index.path": args.out}
    overrides = tuple(args.overrides) + tuple(f"{k}={v}" for k, v in flags.items() if v)
    # the catalog is not read here: the profile's catalog.path only has to be present for validation
    return load_config(args.config, ("catalog.path=unused",) + overrides)


def build(config, args: argparse.Namespace) -> int:
    from vlclip_core.index.export import export_indexes, result_dict
    from vlclip_core.warehouse.spark_session import get_spark

    results = export_indexes(get_spark(config.spark), config, args.model_version, full=args.full)
    for result in results:
        print(json.dumps(result_dict(result), sort_keys=True))
    return 0


def similar(config, args: argparse.Namespace) -> int:
    from vlclip_core.index.ann import ItemIndex
    from vlclip_core.index.export import index_directory

    directory = index_directory(config.index.directory(config.warehouse), args.model_version)
    index = ItemIndex.load(directory, config.index.ef_search, config.index.nprobe)
    for item_id, score in index.similar(args.item_id, args.k):
        print(f"{item_id}\t{score:.4f}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_entry("export", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    config = config_from(args)
    return build(config, args) if args.command == "build" else similar(config, args)


if __name__ == "__main__":
    sys.exit(main())
