"""Units shared by detection, planning and the trainer: one definition of a gigabyte."""

from __future__ import annotations

# GB means 2**30 bytes everywhere in Nexlify (what ``free -g`` and the guide's "16GB RAM" mean).
GB = float(1 << 30)


def to_gb(n_bytes: float) -> float:
    """Bytes as GB (2**30), rounded to two decimals as profiles report them."""
    return round(n_bytes / GB, 2)
