"""Torch device and dtype choice from configuration names."""

from __future__ import annotations

import torch

from vlclip_core.config import ConfigError
from vlclip_core.config.checks import DTYPES, PRECISIONS


def pick_device(*preferences: str) -> torch.device:
    """The first preference that is not "auto" wins; all "auto" -> cuda when available, else cpu.

    >>> pick_device("auto", "cpu")
    device(type='cpu')
    """
    for name in preferences:
        if name in (None, "auto"):
            continue
        if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda; got {name!r}")
        if str(name).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a config name ("float16", "fp16", ...); always float32 on CPU."""
    full_name = PRECISIONS.get(name, name)
    if full_name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES + tuple(PRECISIONS))}")
    return getattr(torch, full_name) if device.type == "cuda" else torch.float32
