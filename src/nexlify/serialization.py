"""The checkpoint file format: layout, integrity, safe loading and bounded decompression.

This module knows files, not algorithms (like stable-baselines3's ``save_util``): a caller hands
it a JSON-safe ``meta`` dict and a ``state`` dict of tensors and plain containers, and gets them
back, verified. ``AdaptiveDQNAgent.save`` / ``from_checkpoint`` decide what goes in them.

Layout (format version 2)::

    b"NXLFY-CKPT\\n"                 magic
    8 bytes, little-endian           length H of the header
    H bytes                          header, UTF-8 JSON: format, format_version, compression
                                     ("none" | "zstd" | "gzip"), payload_bytes, raw_bytes,
                                     torch_version, meta (the caller's JSON object)
    32 bytes                         sha256 of header + payload
    payload                          torch.save(state), compressed as the header says

Every load checks, before anything is unpickled or decompressed, that the sha256 matches: a file
with one flipped bit anywhere in header or payload is refused as damaged. Decompression stops at the
size the header declares, which must be at most ``MAX_EXPANSION`` times the compressed size (plus
64 MiB) and fit in free memory, so a small "zip bomb" cannot take gigabytes. The state is read with
``torch.load(weights_only=True)``: a file that asks the unpickler to import or call anything is
refused as unsafe. Writes are atomic (``nexlify.io``).

Checkpoints of format version 1 (no integrity hash) cannot be verified and are refused with a
line that says so; retrain, or re-save them with the Nexlify version that wrote them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from nexlify.errors import CheckpointError
from nexlify.io import write_bytes_atomic

FORMAT_NAME = "nexlify-checkpoint"
FORMAT_VERSION = 2
MAGIC = b"NXLFY-CKPT\n"
LEGACY_MAGICS = (b"NXLFY-ZSTD\x00", b"NXLFY-GZIP\x00", b"PK\x03\x04")  # format 1: compressed or a torch zip
DIGEST_BYTES = 32
ZSTD_LEVEL = 3  # fast; float weights gain little from higher levels, replay data compresses well anyway
# A real checkpoint compresses 1.2-3x (weights, replay states); refuse claims far beyond that.
MAX_EXPANSION = 64
EXPANSION_ALLOWANCE_BYTES = 64 << 20
_READ_CHUNK = 1 << 20

try:  # optional dependency: gzip is the fallback
    import zstandard
except ImportError:  # pragma: no cover - exercised only where zstandard is missing
    zstandard = None


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the caller's JSON ``meta`` and its ``state`` (tensors, plain containers)."""

    meta: dict[str, Any]
    state: dict[str, Any]


# --- writing ----------------------------------------------------------------------------------
def encode_checkpoint(meta: dict[str, Any], state: dict[str, Any], compress: bool = False) -> bytes:
    """The bytes of a checkpoint file holding ``meta`` (JSON-safe) and ``state`` (torch.save-able)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    raw = buffer.getvalue()
    compression, payload = _compress(raw) if compress else ("none", raw)
    try:
        header_text = json.dumps({
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "compression": compression,
            "payload_bytes": len(payload),
            "raw_bytes": len(raw),
            "torch_version": str(torch.__version__),
            "meta": meta,
        })
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable (lists, not arrays): {exc}") from None
    header = header_text.encode("utf-8")
    digest = hashlib.sha256(header + payload).digest()
    return b"".join((MAGIC, len(header).to_bytes(8, "little"), header, digest, payload))


def write_checkpoint(path: str | Path, meta: dict[str, Any], state: dict[str, Any], compress: bool = False) -> int:
    """Atomically write a checkpoint file; returns its size in bytes."""
    data = encode_checkpoint(meta, state, compress)
    write_bytes_atomic(path, data)
    return len(data)


def _compress(raw: bytes) -> tuple[str, bytes]:
    if zstandard is not None:
        return "zstd", zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return "gzip", gzip.compress(raw, compresslevel=6)


# --- reading ----------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read, verify, decompress (bounded) and safely unpickle a checkpoint file."""
    path = Path(path)
    header, payload = _verified_parts(path)
    raw = _decompress(payload, header, path)
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "GLOBAL" in message or "allowed global" in message or "REDUCE" in message:
            raise CheckpointError(
                f"checkpoint {path} is unsafe: it asks to import or run code while loading "
                "(only tensors and plain containers are allowed); refusing to load it"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt: its payload does not unpickle") from None
    except Exception as exc:  # a verified but malformed payload: a crafted file
        raise CheckpointError(f"checkpoint {path} is corrupt: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: its payload is not a dict of named state")
    return Checkpoint(meta=header["meta"], state=state)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The verified ``meta`` of a checkpoint without unpickling its state (cheap pre-flight checks)."""
    header, _ = _verified_parts(Path(path))
    return header["meta"]


def _verified_parts(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of ``path`` once magic, lengths, JSON and sha256 all check out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a folder; give the path of a .pth file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not data:
        raise CheckpointError(f"checkpoint {path} is empty (truncated or an interrupted copy)")
    if not data.startswith(MAGIC):
        if data.startswith(LEGACY_MAGICS):
            raise CheckpointError(
                f"checkpoint {path} is in the format of an earlier Nexlify (version 1, without an integrity "
                "hash), which cannot be verified; retrain, or re-save it with the Nexlify version that wrote it"
            )
        raise CheckpointError(f"{path} is not a Nexlify checkpoint (no '{MAGIC.strip().decode()}' header)")
    start = len(MAGIC) + 8
    header_len = int.from_bytes(data[len(MAGIC):start], "little")
    if len(data) < start + header_len + DIGEST_BYTES:
        raise CheckpointError(f"checkpoint {path} is truncated (shorter than its header says)")
    header_bytes = data[start:start + header_len]
    digest = data[start + header_len:start + header_len + DIGEST_BYTES]
    payload = data[start + header_len + DIGEST_BYTES:]
    if hashlib.sha256(header_bytes + payload).digest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its contents do not match the sha256 recorded when it was written "
            "(a bad copy, disk or edit); use another checkpoint"
        )
    return _parsed_header(header_bytes, len(payload), path), payload


def _parsed_header(header_bytes: bytes, payload_len: int, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"checkpoint {path} is corrupt: its header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a Nexlify checkpoint (its header names no '{FORMAT_NAME}' format)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this Nexlify reads version {FORMAT_VERSION}"
        )
    if header.get("compression") not in ("none", "zstd", "gzip"):
        raise CheckpointError(f"checkpoint {path} names an unknown compression {header.get('compression')!r}")
    for key in ("payload_bytes", "raw_bytes"):
        if type(header.get(key)) is not int or header[key] < 0:
            raise CheckpointError(f"checkpoint {path} is corrupt: header field {key} is not a byte count")
    if header["payload_bytes"] != payload_len:
        raise CheckpointError(f"checkpoint {path} is corrupt: payload is {payload_len} bytes, header says "
                              f"{header['payload_bytes']}")
    if not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata is not a JSON object")
    return header


def _decompress(payload: bytes, header: dict[str, Any], path: Path) -> bytes:
    """The raw state bytes; never more than the header's ``raw_bytes``, itself bounded."""
    compression, declared = header["compression"], header["raw_bytes"]
    if compression == "none":
        if declared != len(payload):
            raise CheckpointError(f"checkpoint {path} is corrupt: raw size {declared} != payload {len(payload)}")
        return payload
    if declared > MAX_EXPANSION * len(payload) + EXPANSION_ALLOWANCE_BYTES:
        raise CheckpointError(
            f"checkpoint {path} claims {declared:,} bytes from {len(payload):,} compressed ones, far more than "
            "real checkpoints expand; refusing to decompress it (a damaged or hostile file)"
        )
    available = psutil.virtual_memory().available
    if declared > available:
        raise CheckpointError(f"checkpoint {path} needs {declared / 2**30:.1f} GB to load but only "
                              f"{available / 2**30:.1f} GB of memory is free; free memory and retry")
    if compression == "zstd":
        if zstandard is None:
            raise CheckpointError(f"checkpoint {path} is zstandard-compressed; pip install zstandard to read it")
        reader: Any = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload))
    else:
        reader = gzip.GzipFile(fileobj=io.BytesIO(payload))
    try:
        with reader:
            raw = _read_at_most(reader, declared + 1)
    except Exception as exc:  # zstd/gzip/EOF errors of a damaged payload
        raise CheckpointError(f"checkpoint {path} is corrupt (decompression failed: {_first_line(exc)})") from None
    if len(raw) != declared:
        raise CheckpointError(f"checkpoint {path} is corrupt: it decompresses to a size other than recorded")
    return raw


def _read_at_most(reader: Any, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = reader.read(min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "encode_checkpoint",
    "read_checkpoint",
    "read_checkpoint_meta",
    "write_checkpoint",
]
