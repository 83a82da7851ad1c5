"""Logging set-up shared by the entry points (library code only ever calls logging.getLogger)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its connection chatter is not ours
