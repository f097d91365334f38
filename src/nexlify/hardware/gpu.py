"""GPUs torch can use (CUDA, ROCm, MPS), cards it cannot use and why, and their matrix-unit support.

Nothing here imports torch at module import time: ``detect_gpu`` imports it lazily (or takes fake
torch/NVML objects in tests), and the NVML readers work without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from nexlify.devices import device_available
from nexlify.hardware.units import GB, to_gb

# Turing chips TU116/TU117 (GTX 16xx, MX450/550, T400-T1200) are CC 7.5 but have no tensor cores.
_NO_TENSOR_CORE_MARKERS = ("GTX 16", "GTX16", "MX4", "MX5", " T400", " T500", " T550", " T600",
                           " T1000", " T1200")
# Keys of the primary (first) GPU copied to the top of ``profile['gpu']`` for convenience.
PRIMARY_KEYS = ("vendor", "name", "vram_gb", "vram_free_gb", "compute_capability", "tensor_cores", "bf16")
# Unified memory (Apple): Metal lets the GPU use about three quarters of RAM.
UNIFIED_MEMORY_SHARE = 0.75


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


def canonical_vendor(name: str | None) -> str | None:
    """'nvidia', 'NVIDIA Corporation', 'amd', 'Apple' -> NVIDIA / AMD / Apple (profiles are hand-written too)."""
    if not name:
        return None
    lowered = str(name).lower()
    for key, canonical in (("nvidia", "NVIDIA"), ("amd", "AMD"), ("advanced micro", "AMD"), ("apple", "Apple")):
        if key in lowered:
            return canonical
    return str(name)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU; sizes in GB (2**30). ``reason`` is set only for a card torch cannot use."""

    vendor: str
    name: str
    vram_gb: float
    vram_free_gb: float | None = None
    compute_capability: tuple[int, int] | None = None
    tensor_cores: bool = False
    bf16: bool = False
    multiprocessors: int | None = None
    arch: str | None = None
    unified_memory: bool = False
    reason: str | None = None

    @classmethod
    def create(cls, vendor: str, name: str, vram_gb: float, vram_free_gb: float | None = None,
               compute_capability: Any = None, multiprocessors: int | None = None, arch: str | None = None,
               tensor_cores: bool | None = None, bf16: bool | None = None, unified_memory: bool | None = None,
               reason: str | None = None) -> GpuDevice:
        """A device whose tensor cores and bf16 follow from vendor, name, arch and compute capability
        unless given."""
        cc = (int(compute_capability[0]), int(compute_capability[1])) if compute_capability else None
        if vendor == "NVIDIA":
            inferred = nvidia_tensor_cores(name, cc), bool(cc) and cc[0] >= 8
        elif vendor == "AMD":
            inferred = amd_matrix_support(arch, cc)
        else:
            inferred = False, False
        return cls(vendor=vendor, name=name, vram_gb=round(float(vram_gb), 2),
                   vram_free_gb=None if vram_free_gb is None else round(float(vram_free_gb), 2),
                   compute_capability=cc,
                   tensor_cores=inferred[0] if tensor_cores is None else bool(tensor_cores),
                   bf16=inferred[1] if bf16 is None else bool(bf16), multiprocessors=multiprocessors,
                   arch=arch, unified_memory=vendor == "Apple" if unified_memory is None else bool(unified_memory),
                   reason=reason)

    @classmethod
    def from_dict(cls, values: dict[str, Any], backend: str | None = None, total_ram_gb: float = 8.0) -> GpuDevice:
        """A device from a partial dict: vendor from the backend when missing, Apple's memory from RAM,
        free memory 90% of total when unknown."""
        v = dict(values)
        vendor = canonical_vendor(v.get("vendor")) or {"rocm": "AMD", "mps": "Apple"}.get(backend or "", "NVIDIA")
        vram = v.get("vram_gb")
        if vram is None:
            vram = round(UNIFIED_MEMORY_SHARE * total_ram_gb, 2) if vendor == "Apple" else 0.0
        free = v.get("vram_free_gb")
        return cls.create(vendor, v.get("name") or f"{vendor} GPU", float(vram),
                          round(0.9 * float(vram), 2) if free is None else free, v.get("compute_capability"),
                          v.get("multiprocessors"), v.get("arch"), v.get("tensor_cores"), v.get("bf16"),
                          v.get("unified_memory"), v.get("reason"))

    def to_dict(self) -> dict[str, Any]:
        """The layout of one entry of ``profile['gpu']['devices']`` (optional keys only when set)."""
        out: dict[str, Any] = {
            "vendor": self.vendor, "name": self.name, "vram_gb": self.vram_gb, "vram_free_gb": self.vram_free_gb,
            "compute_capability": list(self.compute_capability) if self.compute_capability else None,
            "tensor_cores": self.tensor_cores, "bf16": self.bf16, "multiprocessors": self.multiprocessors,
        }
        if self.arch:
            out["arch"] = self.arch
        if self.unified_memory:
            out["unified_memory"] = True
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Gpu:
    """The GPUs torch can use (``devices``; backend cuda, rocm or mps) and the cards it cannot."""

    backend: str | None = None
    devices: tuple[GpuDevice, ...] = ()
    unusable_devices: tuple[GpuDevice, ...] = field(default_factory=tuple)

    @property
    def available(self) -> bool:
        return bool(self.devices)

    @property
    def primary(self) -> GpuDevice | None:
        """The first device (torch's cuda:0), or None."""
        return self.devices[0] if self.devices else None

    def to_dict(self) -> dict[str, Any]:
        """The ``profile['gpu']`` layout: available, backend, devices, count, [unusable_devices], and
        the primary GPU's keys on top."""
        out: dict[str, Any] = {"available": self.available, "backend": self.backend,
                               "devices": [d.to_dict() for d in self.devices], "count": len(self.devices)}
        if self.unusable_devices:
            out["unusable_devices"] = [d.to_dict() for d in self.unusable_devices]
        first = out["devices"][0] if out["devices"] else {}
        out.update({k: first.get(k) for k in PRIMARY_KEYS})
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, total_ram_gb: float = 8.0) -> Gpu:
        """A Gpu from a partial dict; a GPU given only by top-level keys (vendor, name, vram_gb, ...)
        becomes devices[0]; ``available: False`` leaves no usable device."""
        v = dict(values or {})
        raw = [dict(d) for d in v.get("devices") or []]
        if not raw and v.get("available") and (v.get("name") or v.get("vram_gb") is not None
                                               or v.get("backend") == "mps"):
            raw = [{k: v[k] for k in (*PRIMARY_KEYS, "multiprocessors", "arch") if k in v}]
        backend = v.get("backend")
        if raw and backend is None:
            vendor = canonical_vendor(raw[0].get("vendor")) or "NVIDIA"
            backend = {"AMD": "rocm", "Apple": "mps"}.get(vendor, "cuda")
        devices = tuple(GpuDevice.from_dict(d, backend, total_ram_gb) for d in raw)
        if not v.get("available", bool(devices)):
            devices = ()
        unusable = tuple(GpuDevice.from_dict(d, None, total_ram_gb) for d in v.get("unusable_devices") or [])
        return cls(backend if devices else None, devices, unusable)


# ---------------------------------------------------------------------------------------------
# NVML: the cards on the machine, read without torch
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NvmlCard:
    """One card as NVML reports it (bytes)."""

    name: str
    uuid: str | None
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int] | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_card(nvml: Any, index: int) -> NvmlCard:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    cc = uuid = None
    with contextlib.suppress(Exception):
        cc = tuple(int(x) for x in nvml.nvmlDeviceGetCudaComputeCapability(handle))
    with contextlib.suppress(Exception):
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    return NvmlCard(_text(nvml.nvmlDeviceGetName(handle)), uuid, int(mem.total), int(mem.free), cc)  # type: ignore[arg-type]


def _default_module(name: str) -> Any:
    try:
        return __import__(name)
    except Exception:
        return None


def nvml_cards(nvml: Any = "auto") -> list[NvmlCard]:
    """The cards NVML sees (independent of torch); [] without NVML or on any NVML error."""
    nvml = _default_module("pynvml") if nvml == "auto" else nvml
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception:
        return []
    cards: list[NvmlCard] = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            cards.append(_read_card(nvml, i))
    except Exception:
        pass
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return cards


# ---------------------------------------------------------------------------------------------
# torch's view
# ---------------------------------------------------------------------------------------------
def _matching_card(props: Any, index: int, count: int, cards: list[NvmlCard]) -> NvmlCard | None:
    # Match by UUID: CUDA_VISIBLE_DEVICES and CUDA's device order can differ from NVML's.
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        for card in cards:
            if card.uuid in (f"GPU-{uuid}", str(uuid)):
                return card
    name = str(getattr(props, "name", ""))
    if len(cards) == count and cards[index].name == name:
        return cards[index]
    return None


def _cuda_devices(torch: Any, hip: str | None, cards: list[NvmlCard]) -> list[GpuDevice]:
    devices = []
    count = torch.cuda.device_count()
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        total = float(getattr(p, "total_memory", 0))
        free: float | None = None
        # NVML reads free memory without creating a CUDA context.
        card = None if hip else _matching_card(p, i, count, cards)
        if card is not None:
            free, total = float(card.free_bytes), float(card.total_bytes) or total
        else:
            with contextlib.suppress(Exception):
                free = float(torch.cuda.mem_get_info(i)[0])
        devices.append(GpuDevice.create(
            "AMD" if hip else "NVIDIA", str(getattr(p, "name", f"GPU {i}")), total / GB,
            None if free is None else free / GB, (int(getattr(p, "major", 0)), int(getattr(p, "minor", 0))),
            getattr(p, "multi_processor_count", None), getattr(p, "gcnArchName", None) if hip else None))
    return devices


def _unusable_reason(torch: Any, hip: str | None) -> str:
    if torch is None:
        return "torch is not installed; install a CUDA build of torch"
    if getattr(torch.version, "cuda", None) is None and not hip:
        return "torch is a CPU-only build; install a CUDA build of torch to use this GPU"
    return (f"torch (CUDA {torch.version.cuda}) cannot use this GPU: driver too old "
            "or the card's compute capability is not in this build")


def _mps_device(torch: Any, total_ram_gb: float | None) -> GpuDevice:
    total = None
    with contextlib.suppress(Exception):
        total = float(torch.mps.recommended_max_memory()) / GB
    if not total:
        total = UNIFIED_MEMORY_SHARE * (total_ram_gb or 8.0)
    used = 0.0
    with contextlib.suppress(Exception):
        used = float(torch.mps.driver_allocated_memory()) / GB
    return GpuDevice.create("Apple", "Apple GPU (MPS)", total, max(0.0, total - used), unified_memory=True)


def detect_gpu(torch_module: Any = "auto", nvml: Any = "auto", total_ram_gb: float | None = None) -> Gpu:
    """GPUs torch can use (CUDA, ROCm, MPS) plus cards it cannot use, with the reason why.

    ``torch_module``/``nvml`` default to the real modules; pass fakes (or None) in tests.
    """
    torch = _default_module("torch") if torch_module == "auto" else torch_module
    cards = nvml_cards(nvml)
    hip = getattr(getattr(torch, "version", None), "hip", None) if torch is not None else None
    if torch is not None and device_available("cuda", torch):
        return Gpu("rocm" if hip else "cuda", tuple(_cuda_devices(torch, hip, cards)))
    reason = _unusable_reason(torch, hip)
    unusable = tuple(GpuDevice.create("NVIDIA", c.name, c.total_bytes / GB, c.free_bytes / GB,
                                      c.compute_capability, reason=reason) for c in cards)
    if torch is not None and device_available("mps", torch):
        return Gpu("mps", (_mps_device(torch, total_ram_gb),), unusable)
    return Gpu(None, (), unusable)


def gpu_detection_key(cards: list[NvmlCard], environ: dict[str, str] | None = None) -> str:
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
        "cards": [[c.name, c.uuid, c.total_bytes] for c in cards],
        "torch": torch_version,
        "platform": [sys.platform, platform.machine()],
        "visible": {k: env.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def refresh_free_vram(gpu: Gpu, cards: list[NvmlCard]) -> Gpu:
    """A remembered Gpu with each NVIDIA card's free memory read again from NVML (by name, in order)."""
    unused = list(cards)
    devices = []
    for device in gpu.devices:
        match = next((c for c in unused if c.name == device.name), None)
        if match is not None:
            unused.remove(match)
            device = replace(device, vram_free_gb=to_gb(match.free_bytes))
        devices.append(device)
    return replace(gpu, devices=tuple(devices))
