"""TrainingConfig: every knob of a run in one validated dataclass with a JSON round trip.

The hardware planner fills the hardware-dependent fields; users override any field by name.
The dict form (``to_dict``) is what the guide calls ``optimal_config``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexlify.errors import ConfigError

# The guide's model-size table: hidden layer widths. One place for this fact.
MODEL_WIDTHS: dict[str, tuple[int, ...]] = {
    "tiny": (64, 32),
    "small": (128, 64),
    "medium": (128, 128, 64),
    "large": (256, 256, 128, 64),
    "xlarge": (512, 512, 256, 128, 64),
}
MODEL_SIZES: tuple[str, ...] = tuple(MODEL_WIDTHS)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
OPTIMIZATION_LEVELS: tuple[str, ...] = ("max_performance", "balanced", "gpu_conserve", "cpu_optimize")
TARGET_UPDATE_MODES: tuple[str, ...] = ("hard", "polyak")
REWARD_MODES: tuple[str, ...] = ("log_return", "differential_sharpe")
REPLAY_STATE_DTYPES: tuple[str, ...] = ("float32", "float16")
_STATE_ITEM_BYTES = {"float32": 4, "float16": 2}


def replay_bytes_per_transition(state_size: int, state_dtype: str = "float32") -> int:
    """Replay storage per transition: two states, int64 action, float32 reward and done, uint8 horizon.

    Kept free of torch so the planner (and a cached ``nexlify profile``) never has to import it.
    """
    if state_dtype not in _STATE_ITEM_BYTES:
        raise ValueError(f"state_dtype must be one of {', '.join(REPLAY_STATE_DTYPES)}, got {state_dtype!r}")
    return 2 * state_size * _STATE_ITEM_BYTES[state_dtype] + 8 + 4 + 4 + 1
VALIDATION_METRICS: tuple[str, ...] = ("sharpe", "final_equity")
ENV_BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch")
STANDALONE_EPSILON_DECAY_STEPS = 100_000


@dataclass
class TrainingConfig:
    """Every setting of a training run. Validated on creation; ``to_dict``/``from_dict`` round-trip."""

    # --- network ---
    model_size: str = "small"
    dueling: bool = False
    # --- learning ---
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    gamma: float = 0.99
    max_grad_norm: float = 10.0
    train_frequency: int = 4  # environment transitions collected per learning step
    learning_starts: int = 1_000  # transitions stored before the first learning step
    target_update: str = "hard"
    target_update_interval: int = 500  # learning steps between hard target copies
    tau: float = 0.005  # Polyak rate when target_update == "polyak"
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    # Transitions over which epsilon falls linearly. None: the trainer uses exploration_fraction x the
    # run's transitions; a standalone agent uses STANDALONE_EPSILON_DECAY_STEPS.
    epsilon_decay_steps: int | None = None
    exploration_fraction: float = 0.3
    n_step: int = 1
    prioritized_replay: bool = False
    priority_alpha: float = 0.6
    priority_beta: float = 0.4
    # --- replay memory ---
    buffer_size: int = 100_000
    replay_state_dtype: str = "float32"
    # --- hardware ---
    device: str = "cpu"
    use_mixed_precision: bool = False
    precision: str = "fp32"
    num_workers: int = 1  # torch intra-op threads for the network math
    parallel_envs: int = 1  # environments stepped together as arrays
    # Where the training environments live: numpy arrays on the host, or torch tensors on the
    # training device (no host round trips). auto = torch on accelerators, numpy on the CPU.
    env_backend: str = "auto"
    checkpoint_compression: bool = False
    optimization_level: str = "balanced"
    memory_reserve_gb: float = 0.5  # replay stops growing when free host RAM falls below this
    # --- trading environment ---
    initial_balance: float = 10_000.0
    fee: float = 0.001
    slippage: float = 0.0005
    reward_mode: str = "log_return"
    # --- run ---
    episodes: int = 1000
    data_days: int | None = 180
    eval_interval: int = 10  # episodes between greedy validation runs
    save_interval: int = 50  # episodes between checkpoint_ep{N}.pth files
    validation_metric: str = "sharpe"
    seed: int = 42

    def __post_init__(self) -> None:
        self.validate()

    # --- derived facts -------------------------------------------------------------------
    @property
    def hidden_layers(self) -> tuple[int, ...]:
        """Hidden widths of the chosen model size (the guide's table)."""
        return MODEL_WIDTHS[self.model_size]

    @property
    def effective_batch_size(self) -> int:
        """Samples per optimizer step: batch x accumulation."""
        return self.batch_size * self.gradient_accumulation_steps

    @property
    def replay_ratio(self) -> float:
        """Gradient samples per collected transition."""
        return self.effective_batch_size / self.train_frequency

    # --- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the field and the valid values when anything is off."""
        _choice("model_size", self.model_size, MODEL_SIZES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimization_level", self.optimization_level, OPTIMIZATION_LEVELS)
        _choice("target_update", self.target_update, TARGET_UPDATE_MODES)
        _choice("reward_mode", self.reward_mode, REWARD_MODES)
        _choice("replay_state_dtype", self.replay_state_dtype, REPLAY_STATE_DTYPES)
        _choice("validation_metric", self.validation_metric, VALIDATION_METRICS)
        _choice("env_backend", self.env_backend, ENV_BACKENDS)
        for name in (
            "batch_size",
            "gradient_accumulation_steps",
            "train_frequency",
            "target_update_interval",
            "n_step",
            "buffer_size",
            "num_workers",
            "parallel_envs",
            "episodes",
            "eval_interval",
            "save_interval",
        ):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ConfigError(f"learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        if self.data_days is not None:
            _positive_int("data_days", self.data_days)
        if self.epsilon_decay_steps is not None:
            _positive_int("epsilon_decay_steps", self.epsilon_decay_steps)
        _in_range("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _in_range("gamma", self.gamma, 0.0, 1.0)
        _in_range("tau", self.tau, 0.0, 1.0, low_open=True)
        _in_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        _in_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        _in_range("exploration_fraction", self.exploration_fraction, 0.0, 1.0, low_open=True)
        _in_range("priority_alpha", self.priority_alpha, 0.0, 1.0)
        _in_range("priority_beta", self.priority_beta, 0.0, 1.0)
        _in_range("fee", self.fee, 0.0, 0.1)
        _in_range("slippage", self.slippage, 0.0, 0.1)
        if self.epsilon_end > self.epsilon_start:
            raise ConfigError("epsilon_end must not exceed epsilon_start")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if not self.initial_balance > 0:
            raise ConfigError(f"initial_balance must be > 0, got {self.initial_balance!r}")
        if self.memory_reserve_gb < 0:
            raise ConfigError("memory_reserve_gb must be >= 0")
        if self.use_mixed_precision != (self.precision != "fp32"):
            # Keep the guide's boolean and the precision name telling the same story.
            if self.use_mixed_precision and self.precision == "fp32":
                raise ConfigError(
                    "use_mixed_precision=True needs precision 'fp16' or 'bf16'; set precision too"
                )
            raise ConfigError(
                f"precision {self.precision!r} is mixed precision; set use_mixed_precision=True"
            )
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")

    # --- conversion ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """Build from a dict; unknown keys are refused with the list of valid ones."""
        return cls().with_overrides(values)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TrainingConfig:
        """A copy with ``overrides`` applied and validated.

        Setting ``use_mixed_precision`` alone picks a matching precision (bf16/fp16 on, fp32 off),
        so the guide's ``{'use_mixed_precision': True}`` works as written.
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(config_keys()))
        if unknown:
            raise ConfigError(f"unknown config keys: {unknown}; valid keys: {', '.join(config_keys())}")
        values = self.to_dict()
        values.update(overrides)
        if "use_mixed_precision" in overrides and "precision" not in overrides:
            if not overrides["use_mixed_precision"]:
                values["precision"] = "fp32"
            elif values["precision"] == "fp32":
                values["precision"] = "bf16" if values["device"] == "cpu" else "fp16"
        elif "precision" in overrides and "use_mixed_precision" not in overrides:
            values["use_mixed_precision"] = overrides["precision"] != "fp32"
        try:
            return TrainingConfig(**values)
        except TypeError as exc:  # wrong types that dataclass itself rejects
            raise ConfigError(f"invalid config: {exc}") from None

    def to_json(self, path: str | Path) -> None:
        """Write the config as JSON (atomically)."""
        from nexlify.io import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> TrainingConfig:
        """Read a config written by ``to_json`` (or any JSON object of config keys)."""
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of config keys in ``path``; ConfigError saying what is wrong otherwise."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of config keys, like {{\"batch_size\": 64}}")
    return values


def config_keys() -> list[str]:
    """Names of every config key a user may set."""
    return [f.name for f in dataclasses.fields(TrainingConfig)]


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
