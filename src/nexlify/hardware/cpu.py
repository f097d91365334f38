"""The CPU: brand, cores, frequency, SIMD flags and how many cores this process may really use."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexlify.hardware.cgroups import cgroup_cpu_limit
from nexlify.hardware.section import Section
from nexlify.hardware.sysfs import read_int, read_text

SIMD_FLAGS = ("avx", "avx2", "fma", "avx512f", "neon")


@dataclass(frozen=True)
class Cpu(Section):
    """What the CPU offers this process. ``usable_cores`` honours affinity, cgroup quota and cpuset."""

    brand: str = "unknown"
    architecture: str = "unknown"
    physical_cores: int = 1
    logical_cores: int = 1
    usable_cores: int = 1
    affinity_cores: int | None = None
    cgroup_quota_cores: int | None = None
    cgroup_cpuset_cores: int | None = None
    current_freq_mhz: float | None = None
    max_freq_mhz: float | None = None
    simd: dict[str, bool] = field(default_factory=dict)

    @property
    def compute_cores(self) -> int:
        """Physical cores this process may use: the natural torch thread count."""
        return max(1, min(self.physical_cores, self.logical_cores, self.usable_cores))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Cpu:
        """A Cpu from a (possibly partial, hand-written) dict: logical = physical = usable cores when
        only one is known, 1 when none is; usable never above logical."""
        v = dict(values or {})
        logical = int(v.get("logical_cores") or v.get("physical_cores") or v.get("usable_cores") or 1)
        known = cls.given(v)
        known.update(logical_cores=logical, physical_cores=int(v.get("physical_cores") or logical),
                     usable_cores=max(1, min(int(v.get("usable_cores") or logical), logical)))
        return cls(**known)


def thread_candidates(cores: int) -> list[int]:
    """Torch thread counts worth timing on ``cores`` physical cores: 1, half of them, all of them."""
    return sorted({1, max(1, cores // 2), max(1, cores)})


def _affinity_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _cpuinfo_entries(proc_root: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per block (lower-case keys)."""
    entries = []
    for block in (read_text(Path(proc_root) / "cpuinfo") or "").split("\n\n"):
        if not block.strip():
            continue
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        entries.append(entry)
    return entries


def _brand(entries: list[dict[str, str]], first: dict[str, str]) -> str:
    header = entries[0] if entries else {}  # ARM puts "Hardware"/"Model" in a trailing block
    brand = first.get("model name") or header.get("model name") or ""
    if not brand:
        for e in entries:
            brand = e.get("model") if not e.get("model", "").isdigit() else ""
            brand = brand or e.get("hardware", "")
            if brand:
                break
    return brand or platform.processor() or "unknown"


def detect_cpu(proc_root: str = "/proc", sys_root: str = "/sys", cgroup_root: str = "/sys/fs/cgroup",
               affinity: int | None = None, machine: str | None = None) -> Cpu:
    """CPU brand, cores, frequency, SIMD flags and ``usable_cores`` (affinity, quota and cpuset)."""
    entries = _cpuinfo_entries(proc_root)
    processors = [e for e in entries if "processor" in e]
    first = processors[0] if processors else (entries[0] if entries else {})

    logical = len(processors) or os.cpu_count() or 1
    cores = {(e.get("physical id", "0"), e["core id"]) for e in processors if "core id" in e}
    if cores:
        physical = len(cores)
    else:
        # ARM and some VMs omit core ids: fall back to psutil only for the real machine.
        physical = logical
        if proc_root == "/proc":
            with contextlib.suppress(Exception):
                import psutil

                physical = psutil.cpu_count(logical=False) or logical

    mhz = [float(e["cpu mhz"]) for e in processors if _is_number(e.get("cpu mhz"))]
    current = round(sum(mhz) / len(mhz), 1) if mhz else None
    max_khz = read_int(Path(sys_root) / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    max_mhz = round(max_khz / 1000, 1) if max_khz else current

    flags = set((first.get("flags") or first.get("features") or "").split())
    arch = machine or platform.machine() or "unknown"
    simd = {name: name in flags for name in SIMD_FLAGS}
    # aarch64 calls NEON "asimd"; 32-bit ARM says "neon".
    simd["neon"] = "neon" in flags or "asimd" in flags or arch in ("arm64", "aarch64")

    if affinity is None and proc_root == "/proc":
        affinity = _affinity_count()
    limits = cgroup_cpu_limit(proc_root, cgroup_root)
    candidates = [logical] + [v for v in (affinity, limits.quota_cores, limits.cpuset_cores) if v]
    return Cpu(brand=_brand(entries, first), architecture=arch, physical_cores=physical,
               logical_cores=logical, usable_cores=max(1, min(candidates)), affinity_cores=affinity,
               cgroup_quota_cores=limits.quota_cores, cgroup_cpuset_cores=limits.cpuset_cores,
               current_freq_mhz=current, max_freq_mhz=max_mhz, simd=simd)
