"""Detection against fake /proc, /sys and cgroup trees and fake torch/NVML probes (never this machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from nexlify.hardware.cgroups import cgroup_cpu_limit
from nexlify.hardware.cpu import detect_cpu
from nexlify.hardware.detect import Cpu, Environment, Profile, Ram, Storage
from nexlify.hardware.environment import detect_environment
from nexlify.hardware.gpu import detect_gpu, nvidia_tensor_cores
from nexlify.hardware.plan import plan_training
from nexlify.hardware.ram import detect_ram
from nexlify.hardware.storage import detect_storage
from nexlify.hardware.sysfs import parse_cpu_list

GIB = 1 << 30


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cpuinfo(sockets: int, cores: int, threads: int, flags: str = "fpu sse2 avx avx2 fma",
            brand: str = "AMD Ryzen Threadripper 3990X 64-Core Processor") -> str:
    blocks, n = [], 0
    for s in range(sockets):
        for c in range(cores):
            for _ in range(threads):
                blocks.append(f"processor\t: {n}\nmodel name\t: {brand}\nphysical id\t: {s}\n"
                              f"core id\t\t: {c}\ncpu MHz\t\t: 2900.000\nflags\t\t: {flags}\n")
                n += 1
    return "\n".join(blocks)


def meminfo(total_gib: float, avail_gib: float) -> str:
    return (f"MemTotal:       {int(total_gib * GIB / 1024)} kB\n"
            f"MemFree:        1000 kB\nMemAvailable:   {int(avail_gib * GIB / 1024)} kB\n")


@pytest.fixture
def host64(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 64-core, 256 GB host: proc, sys and (empty) cgroup roots."""
    proc, sys_, cg = tmp_path / "proc", tmp_path / "sys", tmp_path / "cgroup"
    write(proc / "cpuinfo", cpuinfo(1, 64, 1))
    write(proc / "meminfo", meminfo(256, 250))
    write(sys_ / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "4300000\n")
    cg.mkdir()
    return proc, sys_, cg


# --- CPU -------------------------------------------------------------------------------------------
def test_cpu_brand_cores_freq_flags(host64: tuple[Path, Path, Path], tmp_path: Path) -> None:
    proc, sys_, cg = host64
    write(proc / "cpuinfo", cpuinfo(2, 4, 2, flags="fpu avx avx2 avx512f fma", brand="Intel Xeon"))
    cpu = detect_cpu(str(proc), str(sys_), str(cg), affinity=16, machine="x86_64")
    assert cpu.brand == "Intel Xeon"
    assert (cpu.physical_cores, cpu.logical_cores, cpu.usable_cores) == (8, 16, 16)
    assert cpu.max_freq_mhz == 4300.0 and cpu.current_freq_mhz == 2900.0
    assert cpu.simd["avx2"] and cpu.simd["avx512f"] and not cpu.simd["neon"]


def test_arm_features_give_neon(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write(proc / "cpuinfo", "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd0c\n\n"
                            "processor\t: 1\nFeatures\t: fp asimd evtstrm aes\n\nHardware\t: Graviton\n")
    cpu = detect_cpu(str(proc), str(tmp_path / "sys"), str(tmp_path / "cg"), affinity=2, machine="aarch64")
    assert cpu.simd["neon"] and cpu.logical_cores == 2 and cpu.brand == "Graviton"


def test_affinity_limits_usable(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    assert detect_cpu(str(proc), str(sys_), str(cg), affinity=6).usable_cores == 6


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}


# --- cgroup v2 -------------------------------------------------------------------------------------
def cgroup_v2(proc: Path, cg: Path, cpu_max: str, mem_max: str, current: int = 0,
              inactive: int = 0, cpuset: str | None = None) -> None:
    write(proc / "self/cgroup", "0::/system.slice/job.scope\n")
    write(cg / "cgroup.controllers", "cpu memory cpuset\n")
    job = cg / "system.slice/job.scope"
    write(job / "cpu.max", cpu_max + "\n")
    write(job / "memory.max", mem_max + "\n")
    write(job / "memory.current", f"{current}\n")
    write(job / "memory.stat", f"anon 1\ninactive_file {inactive}\nactive_file 5\n")
    if cpuset:
        write(job / "cpuset.cpus.effective", cpuset + "\n")


def test_cgroup_v2_limits_64_core_host_to_2_cpus_and_4gb(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    cgroup_v2(proc, cg, "200000 100000", str(4 * GIB), current=GIB, inactive=GIB // 2)
    cpu = detect_cpu(str(proc), str(sys_), str(cg), affinity=64)
    ram = detect_ram(str(proc), str(cg))
    assert cpu.logical_cores == 64 and cpu.usable_cores == 2
    assert ram.host_total_gb == 256 and ram.limit_gb == 4
    assert ram.total_gb == 4 and ram.available_gb == 3.5  # limit - (usage - page cache)
    cfg, _ = plan_training(Profile(cpu=cpu, ram=ram))
    assert cfg.model_size == "tiny" and cfg.num_workers <= 2 and cfg.buffer_size == 25_000


def test_cgroup_v2_fractional_quota_rounds_up_and_max_means_none(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    cgroup_v2(proc, cg, "150000 100000", "max")
    assert cgroup_cpu_limit(str(proc), str(cg)).quota_cores == 2
    assert detect_ram(str(proc), str(cg)).limit_gb is None
    cgroup_v2(proc, cg, "50000 100000", "max")
    assert cgroup_cpu_limit(str(proc), str(cg)).quota_cores == 1
    cgroup_v2(proc, cg, "max 100000", "max", cpuset="0-3,8")
    cpu = detect_cpu(str(proc), str(sys_), str(cg), affinity=64)
    assert cpu.cgroup_quota_cores is None and cpu.usable_cores == 5


def test_cgroup_v2_parent_limit_applies(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    cgroup_v2(proc, cg, "max 100000", "max")
    write(cg / "system.slice/cpu.max", "300000 100000\n")
    assert detect_cpu(str(proc), str(sys_), str(cg), affinity=64).usable_cores == 3


# --- cgroup v1 -------------------------------------------------------------------------------------
def test_cgroup_v1_quota_cpuset_and_memory(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    write(proc / "self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:cpuset:/docker/abc\n"
                                "1:name=systemd:/docker/abc\n")
    base = cg / "cpu,cpuacct/docker/abc"
    write(base / "cpu.cfs_quota_us", "200000\n")
    write(base / "cpu.cfs_period_us", "100000\n")
    write(cg / "cpuset/docker/abc/cpuset.cpus", "0-3,8\n")
    mem = cg / "memory/docker/abc"
    write(mem / "memory.limit_in_bytes", f"{4 * GIB}\n")
    write(mem / "memory.usage_in_bytes", f"{GIB}\n")
    write(mem / "memory.stat", "total_inactive_file 0\n")
    cpu = detect_cpu(str(proc), str(sys_), str(cg), affinity=64)
    ram = detect_ram(str(proc), str(cg))
    assert cpu.cgroup_quota_cores == 2 and cpu.cgroup_cpuset_cores == 5 and cpu.usable_cores == 2
    assert (ram.total_gb, ram.available_gb, ram.limit_gb) == (4, 3, 4)
    cfg, _ = plan_training(Profile(cpu=cpu, ram=ram))
    assert cfg.model_size == "tiny" and cfg.num_workers <= 2


def test_cgroup_v1_unlimited_memory_is_ignored(host64: tuple[Path, Path, Path]) -> None:
    proc, sys_, cg = host64
    write(proc / "self/cgroup", "5:memory:/\n4:cpu,cpuacct:/\n")
    write(cg / "memory/memory.limit_in_bytes", "9223372036854771712\n")
    write(cg / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(cg / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    ram = detect_ram(str(proc), str(cg))
    assert ram.limit_gb is None and ram.total_gb == 256 and ram.available_gb == 250
    assert detect_cpu(str(proc), str(sys_), str(cg), affinity=64).usable_cores == 64


# --- GPU -------------------------------------------------------------------------------------------
class FakeNvml:
    def __init__(self, cards: list[tuple[str, float, float, tuple[int, int], str]]) -> None:
        self.cards = cards

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.cards[h][0].encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=int(self.cards[h][1] * GIB), free=int(self.cards[h][2] * GIB))

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return self.cards[h][3]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.cards[h][4]


def fake_torch(cuda: list[SimpleNamespace] | None = None, cuda_version: str | None = "12.1",
               hip: str | None = None, mps: bool = False) -> SimpleNamespace:
    cuda = cuda or []
    return SimpleNamespace(
        version=SimpleNamespace(cuda=cuda_version, hip=hip),
        cuda=SimpleNamespace(is_available=lambda: bool(cuda), device_count=lambda: len(cuda),
                             get_device_properties=lambda i: cuda[i],
                             mem_get_info=lambda i: (int(cuda[i].total_memory * 0.5), cuda[i].total_memory)),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps)),
        mps=SimpleNamespace(recommended_max_memory=lambda: 12 * GIB, driver_allocated_memory=lambda: GIB),
    )


def props(name: str, gib: float, cc: tuple[int, int], uuid: str | None = None,
          **kw: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, total_memory=int(gib * GIB), major=cc[0], minor=cc[1],
                           multi_processor_count=68, uuid=uuid, **kw)


def test_cuda_card_with_cpu_only_torch_is_unusable() -> None:
    nvml = FakeNvml([("NVIDIA GeForce RTX 3080", 10, 9, (8, 6), "GPU-1")])
    gpu = detect_gpu(fake_torch(cuda_version=None), nvml)
    assert gpu.available is False and gpu.devices == () and gpu.backend is None
    bad = gpu.unusable_devices[0]
    assert bad.name == "NVIDIA GeForce RTX 3080" and "CPU-only build" in bad.reason
    cfg, _ = plan_training({"cpu": {"logical_cores": 8}, "ram": {"total_gb": 32}, "gpu": gpu.to_dict()})
    assert cfg.device == "cpu"


def test_cuda_devices_with_nvml_free_memory_by_uuid() -> None:
    nvml = FakeNvml([("NVIDIA GeForce RTX 4090", 24, 20, (8, 9), "GPU-b"),
                     ("NVIDIA GeForce GTX 1660", 6, 5, (7, 5), "GPU-a")])
    torch = fake_torch([props("NVIDIA GeForce GTX 1660", 5.8, (7, 5), uuid="a"),
                        props("NVIDIA GeForce RTX 4090", 23.6, (8, 9), uuid="b")])
    gpu = detect_gpu(torch, nvml)
    assert gpu.available and gpu.backend == "cuda" and len(gpu.devices) == 2
    first, second = gpu.devices
    assert first.name == gpu.primary.name == "NVIDIA GeForce GTX 1660"
    assert first.vram_free_gb == 5 and not first.tensor_cores and not first.bf16
    assert second.vram_free_gb == 20 and second.tensor_cores and second.bf16
    assert second.compute_capability == (8, 9) and second.multiprocessors == 68


def test_cuda_without_nvml_uses_mem_get_info() -> None:
    gpu = detect_gpu(fake_torch([props("Tesla T4", 15, (7, 5))]), None)
    assert gpu.primary.vram_free_gb == 7.5 and gpu.primary.tensor_cores is True and gpu.primary.bf16 is False


def test_rocm_reports_amd_under_cuda_api() -> None:
    torch = fake_torch([props("AMD Radeon RX 7900 XTX", 24, (11, 0), gcnArchName="gfx1100")], hip="6.0")
    gpu = detect_gpu(torch, None)
    assert gpu.backend == "rocm" and gpu.primary.vendor == "AMD" and gpu.primary.bf16 and gpu.primary.tensor_cores
    cfg, _ = plan_training({"cpu": {"logical_cores": 16}, "ram": {"total_gb": 32}, "gpu": gpu.to_dict()})
    assert cfg.device == "cuda" and cfg.precision == "bf16"


def test_apple_mps() -> None:
    gpu = detect_gpu(fake_torch(mps=True), None, total_ram_gb=16)
    assert gpu.backend == "mps" and gpu.primary.vendor == "Apple"
    assert gpu.primary.vram_gb == 12 and gpu.primary.vram_free_gb == 11
    assert detect_gpu(None, None).available is False


@pytest.mark.parametrize(("name", "cc", "expected"), [
    ("NVIDIA GeForce GTX 1660 SUPER", (7, 5), False),
    ("NVIDIA GeForce GTX 1650", (7, 5), False),
    ("NVIDIA T600", (7, 5), False),
    ("NVIDIA GeForce RTX 2060", (7, 5), True),
    ("Tesla T4", (7, 5), True),
    ("Tesla V100-SXM2-16GB", (7, 0), True),
    ("NVIDIA GeForce GTX 1080 Ti", (6, 1), False),
    ("NVIDIA A100-SXM4-80GB", (8, 0), True),
])
def test_tensor_core_heuristic(name: str, cc: tuple[int, int], expected: bool) -> None:
    assert nvidia_tensor_cores(name, cc) is expected


# --- storage ---------------------------------------------------------------------------------------
def block_tree(sys_: Path, dev: str, disk: str, part: str | None, rotational: str | None,
               bus: str = "pci0000:00/0000:00:1d.0") -> None:
    """/sys/dev/block/<dev> -> ../../devices/<bus>/block/<disk>[/<part>] like the kernel's layout."""
    disk_dir = sys_ / "devices" / bus / "block" / disk
    node = disk_dir / part if part else disk_dir
    node.mkdir(parents=True, exist_ok=True)
    if part:
        write(node / "partition", "1\n")
    if rotational is not None:
        write(disk_dir / "queue/rotational", rotational + "\n")
    link = sys_ / "dev/block" / dev
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(node, link.parent))


def mount_line(i: int, dev: str, mount_point: str, fstype: str, source: str) -> str:
    return f"{i} 1 {dev} / {mount_point} rw,relatime shared:1 - {fstype} {source} rw\n"


@pytest.mark.parametrize(("fstype", "dev", "source", "tree", "kind"), [
    ("ext4", "259:1", "/dev/nvme0n1p1", ("nvme0n1", "nvme0n1p1", "0"), "nvme"),
    ("ext4", "8:1", "/dev/sda1", ("sda", "sda1", "1"), "hdd"),
    ("xfs", "8:16", "/dev/sdb", ("sdb", None, "0"), "ssd"),
    ("nfs4", "0:52", "server:/export", None, "network"),
    ("fuse.sshfs", "0:53", "me@host:/", None, "network"),
    ("overlay", "0:54", "overlay", None, "virtual"),
    ("tmpfs", "0:55", "tmpfs", None, "virtual"),
])
def test_storage_kind_from_mount_and_block_device(tmp_path: Path, fstype: str, dev: str, source: str,
                                                  tree: tuple | None, kind: str) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    data = Path(os.path.realpath(tmp_path)) / "data"
    data.mkdir()
    write(proc / "self/mountinfo", mount_line(20, "254:0", "/", "ext4", "/dev/vda")
          + mount_line(21, dev, str(data), fstype, source))
    if tree:
        block_tree(sys_, dev, *tree)
    out = data / "models" / "run1"  # does not exist: detection must not create it
    st = detect_storage(out, str(proc), str(sys_))
    assert st.kind == kind and st.mount_point == str(data) and st.fstype == fstype
    assert st.free_gb is not None and st.free_gb > 0 and st.total_gb >= st.free_gb
    assert not (data / "models").exists()


def test_storage_dm_device_walks_to_slave_disk(tmp_path: Path) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    block_tree(sys_, "259:0", "nvme0n1", "nvme0n1p2", "0")
    write(sys_ / "devices/pci0000:00/0000:00:1d.0/block/nvme0n1/nvme0n1p2/dev", "259:0\n")
    dm = sys_ / "devices/virtual/block/dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "slaves/nvme0n1p2").symlink_to(os.path.relpath(
        sys_ / "devices/pci0000:00/0000:00:1d.0/block/nvme0n1/nvme0n1p2", dm / "slaves"))
    (sys_ / "dev/block/253:0").symlink_to(os.path.relpath(dm, sys_ / "dev/block"))
    root = Path(os.path.realpath(tmp_path))
    write(proc / "self/mountinfo", mount_line(20, "253:0", str(root), "ext4", "/dev/mapper/vg-root"))
    assert detect_storage(root, str(proc), str(sys_)).kind == "nvme"


# --- environment -----------------------------------------------------------------------------------
def test_environment_flags(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "root"
    write(proc / "version", "Linux version 5.15.90.1-microsoft-standard-WSL2\n")
    write(proc / "1/cgroup", "0::/\n")
    write(root / ".dockerenv", "")
    env = detect_environment(str(proc), str(root), {"COLAB_GPU": "1", "KAGGLE_KERNEL_RUN_TYPE": "Batch"},
                             battery=lambda: SimpleNamespace(power_plugged=False, percent=50))
    assert env.colab and env.kaggle and env.wsl and env.container and env.on_battery is True
    bare = detect_environment(str(proc), str(tmp_path / "empty"), {}, battery=lambda: None)
    assert not bare.colab and not bare.kaggle and not bare.container and bare.on_battery is None


# --- devices: the one availability check --------------------------------------------------------------
def test_device_available_and_require_device() -> None:
    from nexlify.devices import device_available, require_device, usable_device_or_cpu
    from nexlify.errors import ConfigError

    cuda = fake_torch([props("Tesla T4", 15, (7, 5))])
    assert device_available("cuda:0", cuda) and not device_available("mps", cuda)
    assert device_available("mps", fake_torch(mps=True)) and device_available("cpu", fake_torch())
    assert not device_available("cuda", fake_torch())
    assert require_device("cpu") == "cpu" and usable_device_or_cpu("cpu") == "cpu"
    with pytest.raises(ConfigError, match="cpu, cuda, cuda:N or mps"):
        require_device("tpu")


def test_profile_sections_round_trip_through_json_and_fill_in_what_a_partial_dict_omits():
    profile = Profile(cpu=Cpu(brand="X", physical_cores=4, logical_cores=8, usable_cores=6, simd={"avx2": True}),
                      ram=Ram(32.0, 20.0, 64.0, 40.0, 32.0),
                      storage=Storage(path="/data", free_gb=100.0, total_gb=500.0, kind="nvme", fstype="ext4"),
                      environment=Environment(container=True, on_battery=False, os="Linux", python="3.11.9"))
    again = Profile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert (again.cpu, again.ram, again.storage, again.environment) == (
        profile.cpu, profile.ram, profile.storage, profile.environment)
    # null (unknown) and unknown keys read as the defaults, as when the key is missing.
    partial = Profile.from_dict({"storage": {"kind": "hdd", "free_gb": None, "colour": "red"},
                                 "environment": {"wsl": True, "colab": None}})
    assert partial.storage == Storage(kind="hdd")
    assert partial.environment == Environment(wsl=True)
