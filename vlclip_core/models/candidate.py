"""A detected box, shared by the real detector and the null one (torch-free, so the null profile never
imports torch)."""

from __future__ import annotations

from typing import NamedTuple


class Candidate(NamedTuple):
    """One detected box: normalised (x0, y0, x1, y1) clipped to [0, 1], and its confidence."""

    box: tuple
    score: float
