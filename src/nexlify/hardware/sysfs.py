"""Small, forgiving readers for /proc, /sys and cgroup files (they vanish and deny access often)."""

from __future__ import annotations

from pathlib import Path


def read_text(path: str | Path) -> str | None:
    """File text stripped, or None when missing or unreadable."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def read_int(path: str | Path) -> int | None:
    """The first whitespace-separated field of a file as an int, or None."""
    text = read_text(path)
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
