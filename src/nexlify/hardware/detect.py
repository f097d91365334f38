"""The typed hardware profile: what this process can really use, read from /proc, /sys and the cgroups.

``detect_all`` gathers one ``Profile`` from the small detectors (``cpu``, ``ram``, ``gpu``,
``storage``, ``environment``); every detector takes its roots (``proc_root``, ``sys_root``,
``cgroup_root``, ...) as arguments so tests can point them at fake trees. Sizes are GB of 2**30
bytes. ``Profile.from_dict`` reads a partial, hand-written profile (the guide's examples) with
defaults; ``Profile.to_dict`` is the ``profile`` layout of ``hardware_profile.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexlify.hardware.cpu import Cpu, detect_cpu
from nexlify.hardware.environment import Environment, detect_environment
from nexlify.hardware.gpu import Gpu, GpuDevice, detect_gpu
from nexlify.hardware.measurements import Measurements
from nexlify.hardware.ram import Ram, detect_ram
from nexlify.hardware.storage import Storage, detect_storage

__all__ = ["Cpu", "Environment", "Gpu", "GpuDevice", "Measurements", "Profile", "Ram", "Storage", "detect_all"]


@dataclass(frozen=True)
class Profile:
    """One machine: detected hardware plus the profiler's measurements and bookkeeping (``meta``)."""

    cpu: Cpu = field(default_factory=Cpu)
    ram: Ram = field(default_factory=Ram)
    gpu: Gpu = field(default_factory=Gpu)
    storage: Storage = field(default_factory=Storage)
    environment: Environment = field(default_factory=Environment)
    benchmarks: Measurements = field(default_factory=Measurements)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``profile`` layout of ``hardware_profile.json`` (what ``HardwareProfiler.profile`` holds)."""
        out = {"cpu": self.cpu.to_dict(), "ram": self.ram.to_dict(), "gpu": self.gpu.to_dict(),
               "storage": self.storage.to_dict(), "benchmarks": self.benchmarks.to_dict(),
               "environment": self.environment.to_dict()}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Profile:
        """A Profile from a (possibly partial) dict; see each section's ``from_dict`` for its defaults."""
        v = dict(values or {})
        ram = Ram.from_dict(v.get("ram"))
        return cls(cpu=Cpu.from_dict(v.get("cpu")), ram=ram, gpu=Gpu.from_dict(v.get("gpu"), ram.total_gb),
                   storage=Storage.from_dict(v.get("storage")),
                   environment=Environment.from_dict(v.get("environment")),
                   benchmarks=Measurements.from_dict(v.get("benchmarks")), meta=dict(v.get("meta") or {}))


def detect_all(output_dir: str | Path = ".", proc_root: str = "/proc", sys_root: str = "/sys",
               cgroup_root: str = "/sys/fs/cgroup", torch_module: Any = "auto",
               nvml: Any = "auto", gpu: Gpu | None = None) -> Profile:
    """Every detected section (no measurements): cpu, ram, gpu, storage, environment.

    ``gpu``: an already known GPU section (a remembered detection), used instead of probing torch.
    """
    ram = detect_ram(proc_root, cgroup_root)
    return Profile(cpu=detect_cpu(proc_root, sys_root, cgroup_root), ram=ram,
                   gpu=gpu if gpu is not None else detect_gpu(torch_module, nvml, total_ram_gb=ram.total_gb),
                   storage=detect_storage(output_dir, proc_root, sys_root),
                   environment=detect_environment(proc_root))
