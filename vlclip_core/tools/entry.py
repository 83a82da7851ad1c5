"""The one wrapper of every job's main(): a failure logs its traceback once, prints one line, exits 1."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from vlclip_core.errors import ConfigError

log = logging.getLogger("vlclip")


def run_entry(what: str, body: Callable[[], int]) -> int:
    """Run a job's body and return its exit code; any exception is the scheduler's exit 1.

    The traceback goes to the log once (for the operator who reads it), the reason to stderr on one
    line (for the scheduler's task summary). A ConfigError (a bad value, or Delta missing from the
    Spark session) is fully told by its message: no traceback.
    """
    try:
        return body()
    except Exception as err:  # noqa: BLE001 - the scheduler needs a reason and a non-zero exit
        traceback = not isinstance(err, ConfigError)
        log.error("%s failed: %s: %s", what, type(err).__name__, err, exc_info=traceback)
        print(f"vlclip: {what} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def add_override_args(parser: argparse.ArgumentParser, example: str = "") -> None:
    """The options every job takes: repeatable `--set KEY=VALUE` (into args.overrides), `--log-level`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"config override, repeatable{f' ({example})' if example else ''}",
    )
    parser.add_argument("--log-level", default="INFO")
