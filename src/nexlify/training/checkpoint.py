"""Safe, self-describing agent checkpoints.

One ``.pth`` file holds a dict of tensors and plain containers only::

    format            "nexlify-dqn-checkpoint"
    format_version    1
    torch_version     str (informational)
    state_size, action_size, model_size, hidden_layers, dueling
    config            TrainingConfig.to_dict() of the run (every hyperparameter)
    q_network, target_network   state dicts
    optimizer         Adam state dict
    grad_scaler       GradScaler state dict or None
    counters          {"steps", "updates", "epsilon_progress"}
    epsilon           float
    rng               {"explore": numpy PCG64 state (plain ints), "replay": the replay's torch generator state,
                      "replay_device_type": where that generator draws (cpu or cuda)}
    extra_metadata    JSON text of the caller's dict (trainer's feature scaler, episode counter...)
    replay            ReplayBuffer.state_dict() or None
    nstep             {num_envs: NStepAccumulator.state_dict()} or None

It is written with ``torch.save`` and read with ``torch.load(weights_only=True)``: a file that asks
the unpickler to import or call anything (the original loaded checkpoints with full pickle) is
refused as unsafe. With ``checkpoint_compression`` the bytes are zstandard-compressed (gzip when
zstandard is not installed) behind a magic header; loading detects either form. Writes are atomic.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nexlify.config import TrainingConfig
from nexlify.errors import CheckpointError, ConfigError
from nexlify.io import write_bytes_atomic

if TYPE_CHECKING:
    from nexlify.agent.dqn import AdaptiveDQNAgent

FORMAT_NAME = "nexlify-dqn-checkpoint"
FORMAT_VERSION = 1
ZSTD_MAGIC = b"NXLFY-ZSTD\x00"
GZIP_MAGIC = b"NXLFY-GZIP\x00"
ZSTD_LEVEL = 3  # fast; float weights gain little from higher levels, replay data compresses well anyway

_REQUIRED = (
    "config",
    "state_size",
    "action_size",
    "q_network",
    "target_network",
    "optimizer",
    "counters",
    "epsilon",
    "rng",
)
_HARDWARE_FIELDS = ("device", "num_workers")  # belong to the machine loading, not the one that saved

try:  # optional dependency: gzip is the fallback
    import zstandard
except ImportError:  # pragma: no cover - exercised only where zstandard is missing
    zstandard = None


# --- bytes <-> payload ------------------------------------------------------------------------
def compress_bytes(raw: bytes) -> bytes:
    """Compress with zstandard (or gzip) behind a magic header that ``decompress_bytes`` detects."""
    if zstandard is not None:
        return ZSTD_MAGIC + zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return GZIP_MAGIC + gzip.compress(raw, compresslevel=6)


def decompress_bytes(data: bytes, source: str = "checkpoint") -> bytes:
    """Undo ``compress_bytes``; uncompressed data passes through unchanged."""
    try:
        if data.startswith(ZSTD_MAGIC):
            if zstandard is None:
                raise CheckpointError(f"{source} is zstandard-compressed; pip install zstandard to read it")
            return zstandard.ZstdDecompressor().decompress(data[len(ZSTD_MAGIC) :])
        if data.startswith(GZIP_MAGIC):
            return gzip.decompress(data[len(GZIP_MAGIC) :])
    except CheckpointError:
        raise
    except Exception as exc:  # zstd/gzip/EOF errors of a damaged file
        raise CheckpointError(f"{source} is truncated or corrupt (decompression failed: {exc})") from None
    return data


def encode_payload(payload: dict[str, Any], compress: bool) -> bytes:
    """Serialise a plain-container payload with torch.save, optionally compressed."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    raw = buffer.getvalue()
    return compress_bytes(raw) if compress else raw


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read, decompress, safely unpickle (tensors mapped to the CPU) and validate a checkpoint file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not data:
        raise CheckpointError(f"checkpoint {path} is empty (truncated or an interrupted copy)")
    raw = decompress_bytes(data, source=f"checkpoint {path}")
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "GLOBAL" in message or "allowed global" in message or "REDUCE" in message:
            raise CheckpointError(
                f"checkpoint {path} is unsafe: it asks to import or run code while loading "
                "(only tensors and plain containers are allowed); refusing to load it"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not a Nexlify checkpoint") from None
    except Exception as exc:  # truncated zip archives, bad headers, ...
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {first_line}") from None
    _validate(payload, path)
    return payload


def _validate(payload: Any, path: Path) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a Nexlify agent checkpoint (no '{FORMAT_NAME}' header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this Nexlify reads version {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")


def check_compatible(
    payload: dict[str, Any], state_size: int, action_size: int, source: str = "checkpoint"
) -> None:
    """CheckpointError unless the checkpoint's state and action sizes match."""
    saved = (int(payload["state_size"]), int(payload["action_size"]))
    if saved != (state_size, action_size):
        raise CheckpointError(
            f"{source} was trained with state_size={saved[0]}, action_size={saved[1]} but this agent has "
            f"state_size={state_size}, action_size={action_size}; "
            "the features or actions changed since it was saved"
        )


def config_from_payload(payload: dict[str, Any], **overrides: Any) -> TrainingConfig:
    """The run's TrainingConfig from the file, with ``overrides`` (e.g. this machine's device)."""
    try:
        return TrainingConfig.from_dict({**payload["config"], **overrides})
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid for this Nexlify version: {exc}") from None


# --- agent <-> payload ------------------------------------------------------------------------
def agent_payload(
    agent: AdaptiveDQNAgent, extra_metadata: dict[str, Any] | None = None, include_replay: bool = False
) -> dict[str, Any]:
    """Everything needed to rebuild ``agent`` (and, with the replay, to resume it bit-exactly)."""
    try:
        extra_json = json.dumps(extra_metadata or {}, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"extra_metadata must be JSON-serialisable (lists, not arrays): {exc}"
        ) from None
    cfg = agent.config
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "torch_version": str(torch.__version__),
        "state_size": agent.state_size,
        "action_size": agent.action_size,
        "model_size": cfg.model_size,
        "hidden_layers": list(cfg.hidden_layers),
        "dueling": cfg.dueling,
        "config": cfg.to_dict(),
        "q_network": agent.q_network.state_dict(),
        "target_network": agent.target_network.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "grad_scaler": agent.scaler.state_dict() if agent.scaler is not None else None,
        "counters": {
            "steps": agent.steps,
            "updates": agent.updates,
            "epsilon_progress": agent._epsilon_progress,
        },
        "epsilon": agent.epsilon,
        "rng": {
            "explore": agent._explore_rng.bit_generator.state,
            "replay": agent.replay.generator.get_state(),
            "replay_device_type": agent.replay.generator.device.type,
            "device_explore": agent._device_rng.get_state().cpu(),
            "device_type": agent.device.type,
        },
        "extra_metadata": extra_json,
        "replay": agent.replay.state_dict() if include_replay else None,
        "nstep": {n: acc.state_dict() for n, acc in agent._nstep.items()} if include_replay else None,
    }


def restore_agent_state(agent: AdaptiveDQNAgent, payload: dict[str, Any]) -> None:
    """Load weights, optimizer, counters, RNG and (if present) replay into a freshly built agent."""
    try:
        agent.q_network.load_state_dict(payload["q_network"])
        agent.target_network.load_state_dict(payload["target_network"])
        flags = {k: agent.optimizer.param_groups[0].get(k) for k in ("fused", "foreach")}
        agent.optimizer.load_state_dict(payload["optimizer"])
        for group in agent.optimizer.param_groups:
            group.update(flags)  # kernels are this machine's choice, not the saving machine's
        if agent.scaler is not None and payload.get("grad_scaler"):
            agent.scaler.load_state_dict(payload["grad_scaler"])
        counters = payload["counters"]
        agent.steps = int(counters["steps"])
        agent.updates = int(counters["updates"])
        agent._epsilon_progress = int(counters["epsilon_progress"])
        agent.epsilon = float(payload["epsilon"])
        agent._explore_rng.bit_generator.state = payload["rng"]["explore"]
        if payload.get("replay") is not None:
            agent.replay.load_state_dict(payload["replay"])
        agent.replay.set_generator_state(payload["rng"]["replay"], payload["rng"].get("replay_device_type", "cpu"))
        device_state = payload["rng"].get("device_explore")
        if device_state is not None and payload["rng"].get("device_type") == agent.device.type:
            # A generator's state only fits a generator of the same device type.
            agent._device_rng.set_state(device_state)
        for num_envs, acc_state in (payload.get("nstep") or {}).items():
            agent._push_nstep_accumulator(int(num_envs)).load_state_dict(acc_state)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint contents do not fit the network it describes: {first_line}"
        ) from None


def extra_metadata_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The caller's ``extra_metadata`` dict stored in the checkpoint."""
    return json.loads(payload.get("extra_metadata") or "{}")


# --- entry points used by AdaptiveDQNAgent ----------------------------------------------------
def save_agent(
    agent: AdaptiveDQNAgent,
    path: str | Path,
    extra_metadata: dict[str, Any] | None = None,
    include_replay: bool = False,
) -> int:
    """Atomically write ``agent`` to ``path`` (compressed when the config says so); returns bytes written."""
    data = encode_payload(
        agent_payload(agent, extra_metadata, include_replay), agent.config.checkpoint_compression
    )
    write_bytes_atomic(path, data)
    return len(data)


def _available_device(name: str) -> str:
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        return "cpu"
    if kind == "mps" and not torch.backends.mps.is_available():
        return "cpu"
    return name


def _build_from_payload(
    cls: type[AdaptiveDQNAgent], payload: dict[str, Any], **overrides: Any
) -> AdaptiveDQNAgent:
    config = config_from_payload(payload, **overrides)
    agent = cls(int(payload["state_size"]), int(payload["action_size"]), config)
    restore_agent_state(agent, payload)
    return agent


def load_into_agent(agent: AdaptiveDQNAgent, path: str | Path, check_sizes: bool = False) -> dict[str, Any]:
    """Turn ``agent`` into the checkpoint's agent (file's model size, this agent's device/threads).

    The new agent is built and filled completely before it replaces ``agent``'s state, so a bad
    file raises CheckpointError and leaves ``agent`` exactly as it was — never half-loaded or random.
    """
    payload = read_checkpoint(path)
    if check_sizes:
        check_compatible(payload, agent.state_size, agent.action_size, source=f"checkpoint {path}")
    hardware = {name: getattr(agent.config, name) for name in _HARDWARE_FIELDS}
    loaded = _build_from_payload(type(agent), payload, **hardware)
    agent.__dict__.update(loaded.__dict__)
    return extra_metadata_of(payload)


def agent_from_checkpoint(
    cls: type[AdaptiveDQNAgent], path: str | Path, device: str | None = None, **config_overrides: Any
) -> AdaptiveDQNAgent:
    """Build a new agent from a checkpoint; ``device`` None = the file's device if present here, else CPU.

    ``config_overrides`` replace settings of the file's config (e.g. this machine's thread count).
    """
    payload = read_checkpoint(path)
    target = device if device is not None else _available_device(str(payload["config"].get("device", "cpu")))
    agent = _build_from_payload(cls, payload, **{**config_overrides, "device": target})
    agent.checkpoint_metadata = extra_metadata_of(payload)
    return agent


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "agent_from_checkpoint",
    "agent_payload",
    "check_compatible",
    "compress_bytes",
    "config_from_payload",
    "decompress_bytes",
    "encode_payload",
    "extra_metadata_of",
    "load_into_agent",
    "read_checkpoint",
    "restore_agent_state",
    "save_agent",
]
