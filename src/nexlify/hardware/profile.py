"""Hardware detection: what this process can really use, read from /proc, /sys and the cgroup tree.

Every function takes its roots (``proc_root``, ``sys_root``, ``cgroup_root``, ...) as arguments so
tests can point them at fake trees. Sizes are in GB of 2**30 bytes (what ``free -g`` and the
guide's "16GB RAM" mean). Nothing here imports torch at module import time; the GPU probe imports
it lazily (or takes fake torch/NVML objects) so detection stays cheap and testable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

GB = float(1 << 30)
# A cgroup memory limit at or above this is "unlimited" (v1 writes 2**63 rounded to pages).
_ABSURD_LIMIT_BYTES = 1 << 60

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "9p", "ceph", "glusterfs", "lustre",
              "afs", "beegfs", "gpfs", "virtiofs"}
VIRTUAL_FS = {"overlay", "overlayfs", "tmpfs", "ramfs", "aufs", "squashfs", "devtmpfs", "zfs-virtual"}
STORAGE_KINDS = ("nvme", "ssd", "hdd", "network", "virtual", "unknown")


# ---------------------------------------------------------------------------------------------
# small readers
# ---------------------------------------------------------------------------------------------
def _read(path: str | Path) -> str | None:
    """File text stripped, or None when missing/unreadable (sysfs files vanish and deny often)."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _read_int(path: str | Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def parse_cpu_list(text: str) -> set[int]:
    """Parse the kernel's CPU list syntax ("0-3,8,10-11") into a set of CPU ids."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


# ---------------------------------------------------------------------------------------------
# cgroups
# ---------------------------------------------------------------------------------------------
def _cgroup_paths(proc_root: str) -> tuple[str | None, dict[str, str]]:
    """This process's cgroup: (v2 path or None, {v1 controller: path}) from /proc/self/cgroup."""
    text = _read(Path(proc_root) / "self" / "cgroup") or ""
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


def cgroup_cpu_limit(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> dict[str, Any]:
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
        text = _read(d / "cpu.max")
        if text:
            fields = text.split()
            if len(fields) >= 2 and fields[0] != "max":
                with contextlib.suppress(ValueError, ZeroDivisionError):
                    take_quota(int(fields[0]) / int(fields[1]), "cgroup v2 cpu.max")
        take_cpuset(_read(d / "cpuset.cpus.effective"), "cgroup v2 cpuset")
    for d in _v1_dirs(cgroup_root, v1, "cpu"):
        q, p = _read_int(d / "cpu.cfs_quota_us"), _read_int(d / "cpu.cfs_period_us")
        if q is not None and p and q > 0:
            take_quota(q / p, "cgroup v1 cfs quota")
    for d in _v1_dirs(cgroup_root, v1, "cpuset"):
        take_cpuset(_read(d / "cpuset.effective_cpus") or _read(d / "cpuset.cpus"), "cgroup v1 cpuset")
    quota_cores = None if quota is None else max(1, math.ceil(quota - 1e-9))
    return {"quota_cores": quota_cores, "quota_raw": quota, "cpuset_cores": cpuset, "source": source}


def cgroup_memory(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup",
                  host_total_bytes: int | None = None) -> dict[str, Any]:
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
        text = _read(d / "memory.max")
        if text and text != "max":
            with contextlib.suppress(ValueError):
                consider(int(text), _read_int(d / "memory.current"), _memory_stat(d, "inactive_file"))
    for d in _v1_dirs(cgroup_root, v1, "memory"):
        consider(_read_int(d / "memory.limit_in_bytes"), _read_int(d / "memory.usage_in_bytes"),
                 _memory_stat(d, "total_inactive_file"))
    if best is None:
        return {"limit_bytes": None, "working_set_bytes": None}
    return {"limit_bytes": best[0], "working_set_bytes": best[1]}


def _memory_stat(d: Path, key: str) -> int | None:
    for line in (_read(d / "memory.stat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


# ---------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------
def _affinity_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def detect_cpu(proc_root: str = "/proc", sys_root: str = "/sys", cgroup_root: str = "/sys/fs/cgroup",
               affinity: int | None = None, machine: str | None = None) -> dict[str, Any]:
    """CPU brand, cores, frequency, SIMD flags and ``usable_cores`` (affinity, quota and cpuset)."""
    text = _read(Path(proc_root) / "cpuinfo") or ""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    entries = []
    for block in blocks:
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        entries.append(entry)
    processors = [e for e in entries if "processor" in e]
    first = processors[0] if processors else (entries[0] if entries else {})
    header = entries[0] if entries else {}  # ARM puts "Hardware"/"Model" in a trailing block
    brand = first.get("model name") or header.get("model name") or ""
    if not brand:
        for e in entries:
            brand = e.get("model") if not e.get("model", "").isdigit() else ""
            brand = brand or e.get("hardware", "")
            if brand:
                break
    brand = brand or platform.processor() or "unknown"

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
    max_khz = _read_int(Path(sys_root) / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    max_mhz = round(max_khz / 1000, 1) if max_khz else current

    flags = set((first.get("flags") or first.get("features") or "").split())
    arch = machine or platform.machine() or "unknown"
    simd = {
        "avx": "avx" in flags,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
        "avx512f": "avx512f" in flags,
        # aarch64 calls NEON "asimd"; 32-bit ARM says "neon".
        "neon": "neon" in flags or "asimd" in flags or arch in ("arm64", "aarch64"),
    }

    if affinity is None and proc_root == "/proc":
        affinity = _affinity_count()
    limits = cgroup_cpu_limit(proc_root, cgroup_root)
    candidates = [logical] + [v for v in (affinity, limits["quota_cores"], limits["cpuset_cores"]) if v]
    usable = max(1, min(candidates))
    return {
        "brand": brand,
        "architecture": arch,
        "physical_cores": physical,
        "logical_cores": logical,
        "usable_cores": usable,
        "affinity_cores": affinity,
        "cgroup_quota_cores": limits["quota_cores"],
        "cgroup_cpuset_cores": limits["cpuset_cores"],
        "current_freq_mhz": current,
        "max_freq_mhz": max_mhz,
        "simd": simd,
    }


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# RAM
# ---------------------------------------------------------------------------------------------
def detect_ram(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> dict[str, Any]:
    """Host RAM from /proc/meminfo, the cgroup limit, and what this process may really use."""
    info: dict[str, int] = {}
    for line in (_read(Path(proc_root) / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            info[key] = int(fields[0]) * 1024
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
    limit = mem["limit_bytes"]
    if limit:
        # "A container with 4 GB on a 256 GB host has 4 GB."
        total = min(total, limit) if total else limit
        if mem["working_set_bytes"] is not None:
            avail = min(avail, max(0, limit - mem["working_set_bytes"]))
        else:
            avail = min(avail, limit)
    return {
        "total_gb": round(total / GB, 2),
        "available_gb": round(avail / GB, 2),
        "host_total_gb": round(host_total / GB, 2),
        "host_available_gb": round(host_avail / GB, 2),
        "limit_gb": None if limit is None else round(limit / GB, 2),
    }


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------
# Turing chips TU116/TU117 (GTX 16xx, MX450/550, T400-T1200) are CC 7.5 but have no tensor cores.
_NO_TENSOR_CORE_MARKERS = ("GTX 16", "GTX16", "MX4", "MX5", " T400", " T500", " T550", " T600",
                           " T1000", " T1200")


def nvidia_tensor_cores(name: str, cc: tuple[int, int] | list[int] | None) -> bool:
    """Whether an NVIDIA card has tensor cores: CC >= 7.0, except the Turing chips that omit them."""
    if not cc:
        return False
    major, minor = int(cc[0]), int(cc[1])
    if major < 7:
        return False
    if major == 7 and minor == 5:
        upper = f" {name.upper()}"
        return not any(m in upper for m in _NO_TENSOR_CORE_MARKERS)
    return True


def amd_matrix_support(arch: str | None, cc: tuple[int, int] | list[int] | None) -> tuple[bool, bool]:
    """(matrix cores, bf16) for an AMD GPU: CDNA (gfx9xx data-centre) and RDNA3+ (gfx11+)."""
    arch = (arch or "").lower()
    if arch.startswith("gfx"):
        digits = arch[3:].split(":")[0]
        if digits.startswith(("90a", "94", "95")):
            return True, True
        if digits.startswith("908"):
            return True, False
        if len(digits) >= 4 and digits[:2].isdigit() and int(digits[:2]) >= 11:
            return True, True
        return False, False
    if cc:
        major = int(cc[0])
        return major >= 11, major >= 11
    return False, False


def _device_entry(vendor: str, name: str, vram_gb: float, vram_free_gb: float | None,
                  cc: tuple[int, int] | None, multiprocessors: int | None,
                  arch: str | None = None) -> dict[str, Any]:
    if vendor == "NVIDIA":
        tensor = nvidia_tensor_cores(name, cc)
        bf16 = bool(cc) and int(cc[0]) >= 8
    elif vendor == "AMD":
        tensor, bf16 = amd_matrix_support(arch, cc)
    else:
        tensor, bf16 = False, False
    return {
        "vendor": vendor,
        "name": name,
        "vram_gb": round(vram_gb, 2),
        "vram_free_gb": None if vram_free_gb is None else round(vram_free_gb, 2),
        "compute_capability": list(cc) if cc else None,
        "tensor_cores": tensor,
        "bf16": bf16,
        "multiprocessors": multiprocessors,
        **({"arch": arch} if arch else {}),
    }


def _nvml_devices(nvml: Any) -> list[dict[str, Any]]:
    """Cards NVML sees (independent of torch): name, uuid, memory, compute capability."""
    if nvml is None:
        return []
    out: list[dict[str, Any]] = []
    try:
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            try:
                cc = tuple(int(x) for x in nvml.nvmlDeviceGetCudaComputeCapability(h))
            except Exception:
                cc = None
            try:
                uuid = nvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            except Exception:
                uuid = None
            out.append({"name": name, "uuid": uuid, "total": int(mem.total), "free": int(mem.free),
                        "cc": cc})
    except Exception:
        pass
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return out


def _default_nvml() -> Any:
    try:
        import pynvml

        return pynvml
    except Exception:
        return None


def _default_torch() -> Any:
    try:
        import torch

        return torch
    except Exception:
        return None


def detect_gpu(torch_module: Any = "auto", nvml: Any = "auto",
               total_ram_gb: float | None = None) -> dict[str, Any]:
    """GPUs torch can use (CUDA, ROCm, MPS) plus cards it cannot use, with the reason why.

    ``torch_module``/``nvml`` default to the real modules; pass fakes (or None) in tests.
    """
    torch = _default_torch() if torch_module == "auto" else torch_module
    nvml_mod = _default_nvml() if nvml == "auto" else nvml
    devices: list[dict[str, Any]] = []
    unusable: list[dict[str, Any]] = []
    backend: str | None = None

    cuda_ok = False
    if torch is not None:
        with contextlib.suppress(Exception):
            cuda_ok = bool(torch.cuda.is_available())
    hip = getattr(getattr(torch, "version", None), "hip", None) if torch is not None else None

    if cuda_ok:
        backend = "rocm" if hip else "cuda"
        vendor = "AMD" if hip else "NVIDIA"
        nv = _nvml_devices(nvml_mod) if not hip else []
        by_uuid = {d["uuid"]: d for d in nv if d.get("uuid")}
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            name = str(getattr(p, "name", f"GPU {i}"))
            total = float(getattr(p, "total_memory", 0))
            cc = (int(getattr(p, "major", 0)), int(getattr(p, "minor", 0)))
            arch = getattr(p, "gcnArchName", None) if hip else None
            free: float | None = None
            # NVML reads free memory without creating a CUDA context; match by UUID, since
            # CUDA_VISIBLE_DEVICES and CUDA's device order can differ from NVML's.
            uuid = getattr(p, "uuid", None)
            match = None
            if uuid is not None:
                match = by_uuid.get(f"GPU-{uuid}") or by_uuid.get(str(uuid))
            if match is None and len(nv) == torch.cuda.device_count() and nv[i]["name"] == name:
                match = nv[i]
            if match is not None:
                free = float(match["free"])
                total = float(match["total"]) or total
            else:
                with contextlib.suppress(Exception):
                    free = float(torch.cuda.mem_get_info(i)[0])
            devices.append(_device_entry(vendor, name, total / GB, None if free is None else free / GB,
                                         cc, getattr(p, "multi_processor_count", None), arch))
    else:
        for d in _nvml_devices(nvml_mod):
            if torch is None:
                reason = "torch is not installed; install a CUDA build of torch"
            elif getattr(torch.version, "cuda", None) is None and not hip:
                reason = "torch is a CPU-only build; install a CUDA build of torch to use this GPU"
            else:
                reason = (f"torch (CUDA {torch.version.cuda}) cannot use this GPU: driver too old "
                          "or the card's compute capability is not in this build")
            entry = _device_entry("NVIDIA", d["name"], d["total"] / GB, d["free"] / GB, d["cc"], None)
            entry["reason"] = reason
            unusable.append(entry)
        mps = None
        if torch is not None:
            with contextlib.suppress(Exception):
                mps = getattr(torch.backends, "mps", None)
        mps_ok = False
        with contextlib.suppress(Exception):
            mps_ok = bool(mps is not None and mps.is_available())
        if mps_ok:
            backend = "mps"
            total = None
            with contextlib.suppress(Exception):
                total = float(torch.mps.recommended_max_memory()) / GB
            if not total:
                # Unified memory: Metal lets the GPU use about three quarters of RAM.
                total = 0.75 * (total_ram_gb or 8.0)
            used = 0.0
            with contextlib.suppress(Exception):
                used = float(torch.mps.driver_allocated_memory()) / GB
            devices.append(_device_entry("Apple", "Apple GPU (MPS)", total, max(0.0, total - used),
                                         None, None))
            devices[-1]["unified_memory"] = True

    result: dict[str, Any] = {"available": bool(devices), "backend": backend, "devices": devices,
                              "count": len(devices)}
    if unusable:
        result["unusable_devices"] = unusable
    result.update(primary_gpu_keys(devices))
    return result


def nvml_cards(nvml: Any = "auto") -> list[dict[str, Any]]:
    """The cards NVML sees (name, uuid, total and free bytes, compute capability), without torch."""
    return _nvml_devices(_default_nvml() if nvml == "auto" else nvml)


def gpu_detection_key(nvml_devices: list[dict[str, Any]], environ: dict[str, str] | None = None) -> str:
    """What decides torch's view of the GPUs, read without importing torch: the cards NVML sees, the
    installed torch build, the platform and the device-visibility variables. Equal keys, equal result
    of ``detect_gpu`` (free memory aside)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    env = dict(os.environ) if environ is None else environ
    try:
        torch_version: str | None = _version("torch")
    except PackageNotFoundError:
        torch_version = None
    key = {
        "v": 1,
        "cards": [[d.get("name"), d.get("uuid"), d.get("total")] for d in nvml_devices],
        "torch": torch_version,
        "platform": [sys.platform, platform.machine()],
        "visible": {k: env.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def refresh_free_vram(gpu: dict[str, Any], nvml_devices: list[dict[str, Any]]) -> dict[str, Any]:
    """A remembered GPU section with each NVIDIA card's free memory read again from NVML (by name, in order)."""
    fresh = copy.deepcopy(gpu)
    unused = list(nvml_devices)
    for device in fresh.get("devices") or []:
        match = next((d for d in unused if d.get("name") == device.get("name")), None)
        if match is not None:
            unused.remove(match)
            device["vram_free_gb"] = round(match["free"] / GB, 2)
    fresh.update(primary_gpu_keys(fresh.get("devices") or []))
    return fresh


def primary_gpu_keys(devices: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-level convenience keys copied from the primary (first) GPU; None when there is none."""
    keys = ("vendor", "name", "vram_gb", "vram_free_gb", "compute_capability", "tensor_cores", "bf16")
    first = devices[0] if devices else {}
    return {k: first.get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------
def _unescape_mount(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def find_mount(path: str | Path, proc_root: str = "/proc") -> dict[str, str] | None:
    """The mountinfo entry holding ``path`` (longest mount-point prefix; later mounts win ties)."""
    target = os.path.abspath(str(path))
    best: dict[str, str] | None = None
    for line in (_read(Path(proc_root) / "self" / "mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mount_point = _unescape_mount(fields[4])
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= len(best["mount_point"])):
            best = {"mount_point": mount_point, "dev": fields[2], "fstype": tail[0], "source": tail[1]}
    return best


def _block_kind(sys_root: str, dev: str, source: str, depth: int = 0) -> tuple[str, str | None]:
    """(kind, disk name) of a block device, walking partitions and dm/md slaves to the real disk."""
    base = Path(sys_root)
    node = base / "dev" / "block" / dev
    if not node.exists() and source.startswith("/dev/"):
        # btrfs and friends report an anonymous 0:N device; fall back to the source name.
        node = base / "class" / "block" / Path(source).name
    if not node.exists():
        return "unknown", None
    real = Path(os.path.realpath(node))
    disk = real.parent if (real / "partition").exists() else real
    name = disk.name
    slaves = sorted((disk / "slaves").glob("*")) if (disk / "slaves").is_dir() else []
    if slaves and depth < 4:
        slave = Path(os.path.realpath(slaves[0]))
        dev_id = _read(slave / "dev")
        if dev_id:
            return _block_kind(sys_root, dev_id, "", depth + 1)
    if name.startswith(("loop", "ram", "zram")):
        return "virtual", name
    if name.startswith("nvme"):
        return "nvme", name
    rotational = _read(disk / "queue" / "rotational")
    if name.startswith(("vd", "xvd")) or "/virtio" in str(disk):
        # A hypervisor's paravirtual disk: its rotational flag says nothing about the backing store.
        return "virtual", name
    if rotational == "1":
        return "hdd", name
    if rotational == "0":
        return "ssd", name
    return "unknown", name


def detect_storage(path: str | Path = ".", proc_root: str = "/proc",
                   sys_root: str = "/sys") -> dict[str, Any]:
    """Free/total space and the kind of device that holds ``path`` (nothing is created)."""
    target = Path(os.path.abspath(str(path)))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_gb = total_gb = None
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(existing)
        free_gb, total_gb = round(usage.free / GB, 2), round(usage.total / GB, 2)
    # Match mounts against the real path: a symlinked output dir lives where its target lives.
    real = Path(os.path.realpath(existing)) / target.relative_to(existing)
    mount = find_mount(real, proc_root)
    kind, disk = "unknown", None
    fstype = mount["fstype"] if mount else None
    if mount:
        base = fstype.split(".")[0] if fstype else ""
        if fstype in NETWORK_FS or base in NETWORK_FS or (fstype or "").startswith("fuse."):
            kind = "network"
        elif fstype in VIRTUAL_FS:
            kind = "virtual"
        else:
            kind, disk = _block_kind(sys_root, mount["dev"], mount["source"])
    return {"path": str(target), "free_gb": free_gb, "total_gb": total_gb, "kind": kind,
            "fstype": fstype, "mount_point": mount["mount_point"] if mount else None, "device": disk}


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def detect_environment(proc_root: str = "/proc", root: str = "/", environ: dict[str, str] | None = None,
                       battery: Callable[[], Any] | None | str = "auto") -> dict[str, Any]:
    """Where we run: Colab, Kaggle, a container, WSL, on battery; plus OS/Python/torch versions."""
    env = dict(os.environ) if environ is None else environ
    rootp = Path(root)
    colab = any(k.startswith("COLAB_") for k in env) or "google.colab" in env.get("PYTHONPATH", "") \
        or (rootp / "content").is_dir()
    kaggle = "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env
    cg1 = (_read(Path(proc_root) / "1" / "cgroup") or "") + (_read(Path(proc_root) / "self" / "cgroup") or "")
    container = ((rootp / ".dockerenv").exists() or (rootp / "run" / ".containerenv").exists()
                 or "KUBERNETES_SERVICE_HOST" in env or "container" in env
                 or any(h in cg1 for h in ("docker", "kubepods", "containerd", "lxc", "libpod")))
    version = (_read(Path(proc_root) / "version") or "").lower()
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
    return {"colab": bool(colab), "kaggle": kaggle, "container": bool(container), "wsl": wsl,
            "on_battery": on_battery, "os": platform.system(), "python": platform.python_version(),
            "torch": torch_version, "platform": sys.platform}


def detect_all(output_dir: str | Path = ".", proc_root: str = "/proc", sys_root: str = "/sys",
               cgroup_root: str = "/sys/fs/cgroup", torch_module: Any = "auto",
               nvml: Any = "auto", gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every detected section (no benchmarks): cpu, ram, gpu, storage, environment.

    ``gpu``: an already known GPU section (a remembered detection), used instead of probing torch.
    """
    ram = detect_ram(proc_root, cgroup_root)
    return {
        "cpu": detect_cpu(proc_root, sys_root, cgroup_root),
        "ram": ram,
        "gpu": gpu if gpu is not None else detect_gpu(torch_module, nvml, total_ram_gb=ram["total_gb"]),
        "storage": detect_storage(output_dir, proc_root, sys_root),
        "environment": detect_environment(proc_root),
    }
