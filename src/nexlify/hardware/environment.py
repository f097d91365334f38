"""Where we run: Colab, Kaggle, a container, WSL, on battery; plus OS, Python and torch versions."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexlify.hardware.section import Section
from nexlify.hardware.sysfs import read_text


@dataclass(frozen=True)
class Environment(Section):
    """The runtime around the hardware (``on_battery`` None when unknown)."""

    colab: bool = False
    kaggle: bool = False
    container: bool = False
    wsl: bool = False
    on_battery: bool | None = None
    os: str | None = None
    python: str | None = None
    torch: str | None = None
    platform: str | None = None


def detect_environment(proc_root: str = "/proc", root: str = "/", environ: dict[str, str] | None = None,
                       battery: Callable[[], Any] | None | str = "auto") -> Environment:
    """Where we run: Colab, Kaggle, a container, WSL, on battery; plus OS/Python/torch versions."""
    env = dict(os.environ) if environ is None else environ
    rootp = Path(root)
    colab = any(k.startswith("COLAB_") for k in env) or "google.colab" in env.get("PYTHONPATH", "") \
        or (rootp / "content").is_dir()
    kaggle = "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env
    cg1 = (read_text(Path(proc_root) / "1" / "cgroup") or "") + (read_text(Path(proc_root) / "self" / "cgroup") or "")
    container = ((rootp / ".dockerenv").exists() or (rootp / "run" / ".containerenv").exists()
                 or "KUBERNETES_SERVICE_HOST" in env or "container" in env
                 or any(h in cg1 for h in ("docker", "kubepods", "containerd", "lxc", "libpod")))
    version = (read_text(Path(proc_root) / "version") or "").lower()
    wsl = "microsoft" in version or "wsl" in version
    on_battery: bool | None = None
    probe: Any = battery
    if battery == "auto":
        try:
            import psutil

            probe = getattr(psutil, "sensors_battery", None)
        except Exception:
            probe = None
    if callable(probe):
        with contextlib.suppress(Exception):
            state = probe()
            on_battery = None if state is None else not bool(state.power_plugged)
    torch_version = None
    with contextlib.suppress(Exception):
        from importlib.metadata import version as _version

        torch_version = _version("torch")
    return Environment(colab=bool(colab), kaggle=kaggle, container=bool(container), wsl=wsl,
                       on_battery=on_battery, os=platform.system(), python=platform.python_version(),
                       torch=torch_version, platform=sys.platform)
