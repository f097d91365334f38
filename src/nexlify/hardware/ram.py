"""RAM: the host's, the cgroup's limit, and what this process may really use."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexlify.hardware.cgroups import cgroup_memory
from nexlify.hardware.section import Section
from nexlify.hardware.sysfs import read_text
from nexlify.hardware.units import to_gb


@dataclass(frozen=True)
class Ram(Section):
    """RAM in GB (2**30). ``total_gb``/``available_gb`` are what this process may use (cgroup-limited)."""

    total_gb: float = 8.0
    available_gb: float = 6.0
    host_total_gb: float | None = None
    host_available_gb: float | None = None
    limit_gb: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Ram:
        """A Ram from a partial dict: 8 GB total when unknown, 75% of total available when unknown."""
        v = dict(values or {})
        total = float(v.get("total_gb") or 8.0)
        available = v.get("available_gb")
        available = float(min(total, 0.75 * total if available is None else available))
        return cls(total, available, v.get("host_total_gb"), v.get("host_available_gb"), v.get("limit_gb"))


def _meminfo(proc_root: str) -> dict[str, int]:
    info: dict[str, int] = {}
    for line in (read_text(Path(proc_root) / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            info[key] = int(fields[0]) * 1024
    return info


def detect_ram(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> Ram:
    """Host RAM from /proc/meminfo, the cgroup limit, and what this process may really use."""
    info = _meminfo(proc_root)
    host_total = info.get("MemTotal")
    host_avail = info.get("MemAvailable", info.get("MemFree"))
    if host_total is None and proc_root == "/proc":
        with contextlib.suppress(Exception):
            import psutil

            vm = psutil.virtual_memory()
            host_total, host_avail = vm.total, vm.available
    host_total = host_total or 0
    host_avail = host_total if host_avail is None else host_avail
    mem = cgroup_memory(proc_root, cgroup_root, host_total_bytes=host_total or None)
    total, avail = host_total, host_avail
    limit = mem.limit_bytes
    if limit:
        # "A container with 4 GB on a 256 GB host has 4 GB."
        total = min(total, limit) if total else limit
        if mem.working_set_bytes is not None:
            avail = min(avail, max(0, limit - mem.working_set_bytes))
        else:
            avail = min(avail, limit)
    return Ram(total_gb=to_gb(total), available_gb=to_gb(avail), host_total_gb=to_gb(host_total),
               host_available_gb=to_gb(host_avail), limit_gb=None if limit is None else to_gb(limit))
