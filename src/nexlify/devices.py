"""Which torch devices exist here: the one check every layer uses (planner, agent, checkpoints, CLI)."""

from __future__ import annotations

import contextlib
from typing import Any

from nexlify.errors import ConfigError

DEVICE_KINDS = ("cpu", "cuda", "mps")


def _torch() -> Any:
    import torch

    return torch


def device_available(name: str, torch_module: Any = None) -> bool:
    """True when torch can run on ``name`` ("cpu", "cuda", "cuda:N", "mps"). ROCm builds say "cuda".

    ``torch_module``: a stand-in for torch (tests); never raises, an odd build just answers False.
    """
    torch = torch_module if torch_module is not None else _torch()
    kind = name.split(":")[0]
    with contextlib.suppress(Exception):
        if kind == "cpu":
            return True
        if kind == "cuda":
            return bool(torch.cuda.is_available())
        if kind == "mps":
            mps = getattr(torch.backends, "mps", None)
            return bool(mps is not None and mps.is_available())
    return False


def require_device(name: str, label: str = "device") -> str:
    """``name`` when torch can use it here; else a ConfigError that says what to do instead.

    ``label``: how the setting is called where the user typed it (``--device`` on the command line).
    """
    kind = name.split(":")[0]
    if kind not in DEVICE_KINDS:
        raise ConfigError(f"{label} must be cpu, cuda, cuda:N or mps; got {name!r}")
    if not device_available(name):
        fix = ("install a CUDA (or ROCm) build of torch" if kind == "cuda" else "it needs Apple silicon")
        raise ConfigError(f"{label} {name}: torch cannot use {kind} on this machine ({fix}); use {label} cpu")
    return name


def usable_device_or_cpu(name: str) -> str:
    """``name`` when torch can use it here, else "cpu" (loading a GPU-trained model on a laptop)."""
    return name if device_available(name) else "cpu"
