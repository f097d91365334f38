"""Storage: free space and the kind of device (NVMe, SSD, HDD, network, virtual) holding a path."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nexlify.hardware.section import Section
from nexlify.hardware.sysfs import read_text
from nexlify.hardware.units import to_gb

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "9p", "ceph", "glusterfs", "lustre",
              "afs", "beegfs", "gpfs", "virtiofs"}
VIRTUAL_FS = {"overlay", "overlayfs", "tmpfs", "ramfs", "aufs", "squashfs", "devtmpfs", "zfs-virtual"}
STORAGE_KINDS = ("nvme", "ssd", "hdd", "network", "virtual", "unknown")


@dataclass(frozen=True)
class Storage(Section):
    """Where outputs go: free/total GB (2**30) and the device kind (one of ``STORAGE_KINDS``)."""

    path: str = "."
    free_gb: float | None = None
    total_gb: float | None = None
    kind: str = "unknown"
    fstype: str | None = None
    mount_point: str | None = None
    device: str | None = None


def _unescape_mount(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def find_mount(path: str | Path, proc_root: str = "/proc") -> dict[str, str] | None:
    """The mountinfo entry holding ``path`` (longest mount-point prefix; later mounts win ties)."""
    target = os.path.abspath(str(path))
    best: dict[str, str] | None = None
    for line in (read_text(Path(proc_root) / "self" / "mountinfo") or "").splitlines():
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
        dev_id = read_text(slave / "dev")
        if dev_id:
            return _block_kind(sys_root, dev_id, "", depth + 1)
    if name.startswith(("loop", "ram", "zram")):
        return "virtual", name
    if name.startswith("nvme"):
        return "nvme", name
    rotational = read_text(disk / "queue" / "rotational")
    if name.startswith(("vd", "xvd")) or "/virtio" in str(disk):
        # A hypervisor's paravirtual disk: its rotational flag says nothing about the backing store.
        return "virtual", name
    if rotational == "1":
        return "hdd", name
    if rotational == "0":
        return "ssd", name
    return "unknown", name


def detect_storage(path: str | Path = ".", proc_root: str = "/proc", sys_root: str = "/sys") -> Storage:
    """Free/total space and the kind of device that holds ``path`` (nothing is created)."""
    target = Path(os.path.abspath(str(path)))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_gb = total_gb = None
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(existing)
        free_gb, total_gb = to_gb(usage.free), to_gb(usage.total)
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
    return Storage(path=str(target), free_gb=free_gb, total_gb=total_gb, kind=kind, fstype=fstype,
                   mount_point=mount["mount_point"] if mount else None, device=disk)
