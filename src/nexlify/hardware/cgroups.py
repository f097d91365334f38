"""This process's cgroup limits (v1 and v2): CPU quota and cpuset, memory limit and working set."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

from nexlify.hardware.sysfs import parse_cpu_list, read_int, read_text

# A cgroup memory limit at or above this is "unlimited" (v1 writes 2**63 rounded to pages).
_ABSURD_LIMIT_BYTES = 1 << 60


@dataclass(frozen=True)
class CpuLimit:
    """CPU limits of this process's cgroup: quota in whole cores (rounded up, min 1) and cpuset size."""

    quota_cores: int | None = None
    quota_raw: float | None = None
    cpuset_cores: int | None = None
    source: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryLimit:
    """The tightest cgroup memory limit and that cgroup's working set (usage minus page cache)."""

    limit_bytes: int | None = None
    working_set_bytes: int | None = None


def _cgroup_paths(proc_root: str) -> tuple[str | None, dict[str, str]]:
    """This process's cgroup: (v2 path or None, {v1 controller: path}) from /proc/self/cgroup."""
    text = read_text(Path(proc_root) / "self" / "cgroup") or ""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        else:
            for name in controllers.split(","):
                if name:
                    v1[name] = path
            # Keep the joined name too: the mount dir is often "cpu,cpuacct".
            v1.setdefault(controllers, path)
    return v2, v1


def _ancestors(base: Path, cg_path: str) -> list[Path]:
    """Existing dirs from the process's own cgroup up to the mount root (ancestors' limits apply too).

    Inside a cgroup namespace the process path may not exist under the mount (the mount root *is*
    the container's cgroup), so missing levels are skipped and the root is always checked.
    """
    parts = [p for p in cg_path.strip("/").split("/") if p]
    dirs = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v1_dirs(cgroup_root: str, v1: dict[str, str], controller: str) -> list[Path]:
    if controller not in v1:
        return []
    for key, path in v1.items():
        if controller in key.split(","):
            for mount in (key, controller):
                base = Path(cgroup_root) / mount
                if base.is_dir():
                    return _ancestors(base, path)
    return []


def _v2_dirs(cgroup_root: str, v2: str | None) -> list[Path]:
    if v2 is None:
        return []
    dirs: list[Path] = []
    # Pure v2 mounts the unified tree at the root; hybrid systems mount it at .../unified.
    for base in (Path(cgroup_root), Path(cgroup_root) / "unified"):
        if (base / "cgroup.controllers").exists() or (base / "cgroup.procs").exists():
            dirs.extend(_ancestors(base, v2))
    return dirs


def cgroup_cpu_limit(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> CpuLimit:
    """CPU limits of this process's cgroup: quota in cores (rounded up, min 1) and cpuset size."""
    v2, v1 = _cgroup_paths(proc_root)
    quota: float | None = None
    cpuset: int | None = None
    source: list[str] = []

    def take_quota(value: float, where: str) -> None:
        nonlocal quota
        if value > 0 and (quota is None or value < quota):
            quota = value
            source.append(where)

    def take_cpuset(text: str | None, where: str) -> None:
        nonlocal cpuset
        if text:
            try:
                n = len(parse_cpu_list(text))
            except ValueError:
                return
            if n and (cpuset is None or n < cpuset):
                cpuset = n
                source.append(where)

    for d in _v2_dirs(cgroup_root, v2):
        text = read_text(d / "cpu.max")
        if text:
            fields = text.split()
            if len(fields) >= 2 and fields[0] != "max":
                with contextlib.suppress(ValueError, ZeroDivisionError):
                    take_quota(int(fields[0]) / int(fields[1]), "cgroup v2 cpu.max")
        take_cpuset(read_text(d / "cpuset.cpus.effective"), "cgroup v2 cpuset")
    for d in _v1_dirs(cgroup_root, v1, "cpu"):
        q, p = read_int(d / "cpu.cfs_quota_us"), read_int(d / "cpu.cfs_period_us")
        if q is not None and p and q > 0:
            take_quota(q / p, "cgroup v1 cfs quota")
    for d in _v1_dirs(cgroup_root, v1, "cpuset"):
        take_cpuset(read_text(d / "cpuset.effective_cpus") or read_text(d / "cpuset.cpus"), "cgroup v1 cpuset")
    quota_cores = None if quota is None else max(1, math.ceil(quota - 1e-9))
    return CpuLimit(quota_cores, quota, cpuset, tuple(source))


def cgroup_memory(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup",
                  host_total_bytes: int | None = None) -> MemoryLimit:
    """Memory limit and working set (usage minus reclaimable page cache) of this process's cgroup."""
    v2, v1 = _cgroup_paths(proc_root)
    best: tuple[int, int | None] | None = None  # (limit, working set of that cgroup)

    def consider(limit: int | None, usage: int | None, inactive: int | None) -> None:
        nonlocal best
        if limit is None or limit <= 0 or limit >= _ABSURD_LIMIT_BYTES:
            return
        if host_total_bytes and limit >= host_total_bytes:
            return  # no tighter than the host itself
        working = None if usage is None else max(0, usage - (inactive or 0))
        if best is None or limit < best[0]:
            best = (limit, working)

    for d in _v2_dirs(cgroup_root, v2):
        text = read_text(d / "memory.max")
        if text and text != "max":
            with contextlib.suppress(ValueError):
                consider(int(text), read_int(d / "memory.current"), _memory_stat(d, "inactive_file"))
    for d in _v1_dirs(cgroup_root, v1, "memory"):
        consider(read_int(d / "memory.limit_in_bytes"), read_int(d / "memory.usage_in_bytes"),
                 _memory_stat(d, "total_inactive_file"))
    if best is None:
        return MemoryLimit()
    return MemoryLimit(best[0], best[1])


def _memory_stat(d: Path, key: str) -> int | None:
    for line in (read_text(d / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return None
