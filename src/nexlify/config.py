"""TrainingConfig: every knob of a run in one validated dataclass with a JSON round trip.

The hardware planner fills the hardware-dependent fields; users override any field by name.
The dict form (``to_dict``) is what the guide calls ``optimal_config``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.data import feature_names
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
REWARD_MODES: tuple[str, ...] = ("log_return", "differential_sharpe", "vol_scaled", "differential_sortino")
# The differential ratios' rate for their moving moments: 0.01 weighs about the last 100 bars.
DSR_ETA = 0.01
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
# The agent's market features (nexlify.data.feature_names.FEATURE_SETS): "basic" looks back 48 bars,
# "trend" adds week/month returns, moving-average distances, drawdown and a volatility regime.
FEATURE_SETS: tuple[str, ...] = tuple(feature_names.FEATURE_SETS)
# How the agent's actions trade (nexlify.env.actions): toggle = hold/buy/sell orders, target = the
# position it wants (flat/long), target_half = flat/half/long.
ACTION_MODES: tuple[str, ...] = ("toggle", "target", "target_half")
# Training-data augmentation (nexlify.data.augment): mirror = each training market also reversed;
# mirror_calm = both paths also with every move halved.
AUGMENTS: tuple[str, ...] = ("none", "mirror", "mirror_calm")
# Where a round's episodes start: every account at the first row, or evenly spaced around the window
# taken as a loop (nexlify.env.accounts).
EPISODE_STARTS: tuple[str, ...] = ("first", "staggered")
ENV_BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch")
STANDALONE_EPSILON_DECAY_STEPS = 100_000
# Settings that belong to the machine running a run, not to what it learns: a resumed run, or a
# walk-forward job reused from an earlier run, may differ in these.
MACHINE_SETTINGS = ("device", "num_workers", "use_mixed_precision", "precision", "env_backend",
                    "optimization_level", "memory_reserve_gb")


@dataclass
class TrainingConfig:
    """Every setting of a training run. Validated on creation; ``to_dict``/``from_dict`` round-trip."""

    # --- network ---
    model_size: str = "small"
    dueling: bool = False
    # 0: the expected return per action (DQN). N > 0: N quantiles of it per action (QR-DQN).
    n_quantiles: int = 0
    # --- learning ---
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    gamma: float = 0.99
    n_step: int = 1
    max_grad_norm: float = 10.0
    # Decoupled (AdamW) weight decay of the Q-network's weights; 0 is plain Adam.
    weight_decay: float = 0.0
    # Dropout on the Q-network's hidden units, in the learning forward pass only (never when acting
    # or computing targets); 0 is none.
    dropout: float = 0.0
    # LayerNorm after each hidden linear layer, before its ReLU (acting and learning alike).
    layer_norm: bool = False
    # Gaussian noise (standard deviation, in the scaler's units) added to the market features of the
    # states and next states of every learning batch (RAD-style augmentation, Laskin et al. 2020);
    # acting, the stored transitions and the account features are untouched. 0 is none.
    observation_noise: float = 0.0
    # The model that acts out of sample (validation, backtests, saved models, live trading) is an
    # exponential moving average of the online network's weights with this decay per learning step
    # (Polyak averaging of the iterates); training still acts and learns with the online network.
    # 0 is none: the online network acts everywhere.
    policy_averaging: float = 0.0
    train_frequency: int = 4  # environment transitions collected per learning step
    learning_starts: int = 1_000  # transitions stored before the first learning step
    target_update: str = "hard"
    target_update_interval: int = 500  # learning steps between hard target copies
    tau: float = 0.005  # Polyak rate when target_update == "polyak"
    # --- exploration ---
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    # Transitions over which epsilon falls linearly. None: the trainer uses exploration_fraction x the
    # run's transitions; a standalone agent uses STANDALONE_EPSILON_DECAY_STEPS.
    epsilon_decay_steps: int | None = None
    exploration_fraction: float = 0.3
    # --- replay memory ---
    buffer_size: int = 100_000
    replay_state_dtype: str = "float32"
    prioritized_replay: bool = False
    priority_alpha: float = 0.6
    priority_beta: float = 0.4
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
    # The differential Sharpe ratio of each step's return less its costs: on two validation designs
    # (the seven-fold screen, nine seeds each, and the walk-forward's own defaults) every lens free of
    # the model choice leaned its way, and its seeds disagreed 3x less than log_return's
    # (docs/benchmarks.md, session 11).
    reward_mode: str = "differential_sharpe"
    feature_set: str = "basic"
    action_mode: str = "toggle"
    augment: str = "none"  # "mirror": each market and its reverse; "mirror_calm": both also calmer (data.augment)
    # Reward subtracted for every fill, on top of its fee (a switching penalty; backtests unchanged).
    # 0.004 (about 2.7x a fill's fee and slippage) was at or above 0.001 on every seven-fold
    # walk-forward validation lens of both base configurations; 0.002 and 0.008 were not (docs/benchmarks.md).
    trade_penalty: float = 0.004
    # Reward subtracted per step: this times the step's squared log return (a mean-variance reward:
    # holding through wild bars must earn more than holding through calm ones; backtests unchanged).
    risk_aversion: float = 0.0
    dsr_eta: float = DSR_ETA  # the differential ratios' moving-moment rate
    # None: an episode is one pass over the whole training window from its first candle. N: an
    # episode is N steps from a start drawn per account and episode (random windows, seeded).
    episode_bars: int | None = None
    # "first": every account of a round starts at the first row (random windows: at its drawn row).
    # "staggered": the window is a loop and the round's accounts start evenly spaced around it, so
    # accounts stepped together (and so the replay memory) hold different markets and stretches.
    # Lockstep stays: staggered was 0.36 Sharpe below it on the walk-forward's held-out halves of
    # validation over two seed sets (docs/benchmarks.md, session 27).
    episode_start: str = "first"
    # --- run ---
    episodes: int = 1000
    data_days: int | None = 180
    eval_interval: int | float = 10  # episodes between greedy validation runs (0.5: twice an episode)
    save_interval: int = 50  # episodes between checkpoint_ep{N}.pth files
    validation_metric: str = "sharpe"
    # Keep every validated model as validated_ep{N}.pth (weights only, a few hundred KB each), not
    # just the best: what an ensemble of a run's snapshots is built from (nexlify.evaluation.snapshots).
    keep_validated_models: bool = False
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
        """Raise ConfigError naming the key, what it must be, and what it got, when anything is off.

        Every key is checked for type (JSON ``"64"``, ``null`` or ``"no"`` are refused, not
        coerced), finiteness and range; numpy numbers from the planner are normalised to Python ones.
        """
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name)))
        if self.epsilon_end > self.epsilon_start:
            raise ConfigError(
                f"config key epsilon_end ({self.epsilon_end}) must not exceed epsilon_start ({self.epsilon_start})"
            )
        if self.use_mixed_precision != (self.precision != "fp32"):
            # Keep the guide's boolean and the precision name telling the same story.
            if self.use_mixed_precision and self.precision == "fp32":
                raise ConfigError(
                    "use_mixed_precision=True needs precision 'fp16' or 'bf16'; set precision too"
                )
            raise ConfigError(
                f"precision {self.precision!r} is mixed precision; set use_mixed_precision=True"
            )
        if self.device.split(":")[0] not in ("cpu", "cuda", "mps") or not _device_index_ok(self.device):
            raise ConfigError(f"config key device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")

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


MAX_CONFIG_FILE_BYTES = 1 << 20  # a config is a few hundred bytes; anything this big is a wrong file


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of config keys in ``path``; ConfigError saying what is wrong otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; pass a JSON file such as config.json")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"config file {path} is over 1 MB; a config is a small JSON object like "
                          '{"batch_size": 64}')
    try:
        values = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of config keys, like {{\"batch_size\": 64}}")
    return values


def _refuse_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's reader would accept them, so they are refused here."""
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def config_keys() -> list[str]:
    """Names of every config key a user may set."""
    return [f.name for f in dataclasses.fields(TrainingConfig)]


# --- per-key rules: (kind, low, high, low_open) or a tuple of choices ---------------------------
_INT, _FLOAT, _BOOL, _STR = "integer", "number", "boolean (true or false)", "string"
# Numbers kept as ints when whole, so configs and results read as before where fractions are rare.
_WHOLE_WHEN_INTEGRAL = ("eval_interval",)
MAX_SEED = 2**32 - 1  # numpy and torch both take seeds in [0, 2**32) everywhere
_RULES: dict[str, tuple[Any, ...]] = {
    "model_size": MODEL_SIZES,
    "dueling": (_BOOL,),
    "n_quantiles": (_INT, 0, 1024),
    "batch_size": (_INT, 1, 1 << 20),
    "gradient_accumulation_steps": (_INT, 1, 4096),
    "learning_rate": (_FLOAT, 0.0, 1.0, True),
    "gamma": (_FLOAT, 0.0, 1.0),
    "max_grad_norm": (_FLOAT, 0.0, 1e9, True),
    "train_frequency": (_INT, 1, 1 << 24),
    "learning_starts": (_INT, 0, 10**12),
    "target_update": TARGET_UPDATE_MODES,
    "target_update_interval": (_INT, 1, 10**9),
    "tau": (_FLOAT, 0.0, 1.0, True),
    "epsilon_start": (_FLOAT, 0.0, 1.0),
    "epsilon_end": (_FLOAT, 0.0, 1.0),
    "epsilon_decay_steps": (_INT, 1, 10**15, False, True),
    "exploration_fraction": (_FLOAT, 0.0, 1.0, True),
    "n_step": (_INT, 1, 100),
    "prioritized_replay": (_BOOL,),
    "priority_alpha": (_FLOAT, 0.0, 1.0),
    "priority_beta": (_FLOAT, 0.0, 1.0),
    "weight_decay": (_FLOAT, 0.0, 1.0),
    "dropout": (_FLOAT, 0.0, 0.9),
    "layer_norm": (_BOOL,),
    "observation_noise": (_FLOAT, 0.0, 10.0),
    "policy_averaging": (_FLOAT, 0.0, 0.999999),  # 1 would never move from the initial weights
    "buffer_size": (_INT, 1, 10**10),
    "replay_state_dtype": REPLAY_STATE_DTYPES,
    "device": (_STR,),
    "use_mixed_precision": (_BOOL,),
    "precision": PRECISIONS,
    "num_workers": (_INT, 1, 4096),
    "parallel_envs": (_INT, 1, 1 << 20),
    "env_backend": ENV_BACKENDS,
    "checkpoint_compression": (_BOOL,),
    "optimization_level": OPTIMIZATION_LEVELS,
    "memory_reserve_gb": (_FLOAT, 0.0, 1e6),
    "initial_balance": (_FLOAT, 0.0, 1e15, True),
    "fee": (_FLOAT, 0.0, 0.1),
    "slippage": (_FLOAT, 0.0, 0.1),
    "reward_mode": REWARD_MODES,
    "feature_set": FEATURE_SETS,
    "action_mode": ACTION_MODES,
    "augment": AUGMENTS,
    "trade_penalty": (_FLOAT, 0.0, 0.1),
    "risk_aversion": (_FLOAT, 0.0, 1e4),
    "dsr_eta": (_FLOAT, 0.0, 1.0, True),
    "episode_bars": (_INT, 1, 10**9, False, True),
    "episode_start": EPISODE_STARTS,
    "episodes": (_INT, 1, 10**9),
    "data_days": (_INT, 1, 36_500, False, True),  # up to a century of candles; None = all of them
    "eval_interval": (_FLOAT, 0.01, 10**9),  # a whole number stays an int (_WHOLE_WHEN_INTEGRAL)
    "save_interval": (_INT, 1, 10**9),
    "validation_metric": VALIDATION_METRICS,
    "keep_validated_models": (_BOOL,),
    "seed": (_INT, 0, MAX_SEED),
}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, (int, float)) else repr(value)


def _checked(name: str, value: Any, label: str | None = None) -> Any:
    """``value`` if it obeys ``_RULES[name]`` (numpy numbers become Python ones), else ConfigError.

    Messages start with ``label`` (default ``config key NAME``).
    """
    what = f"config key {name}" if label is None else label
    rule = _RULES[name]
    if rule[0] not in (_INT, _FLOAT, _BOOL, _STR):  # a tuple of allowed names
        if not isinstance(value, str) or value not in rule:
            raise ConfigError(f"{what} must be one of {', '.join(rule)}; got {_describe(value)}")
        return value
    kind, *bounds = rule
    if kind == _BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{what} must be true or false; got {_describe(value)}")
        return bool(value)
    if kind == _STR:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string; got {_describe(value)}")
        return value
    low, high, low_open, optional = (*bounds, False, False)[:4]
    if value is None and optional:
        return None
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    is_real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if kind == _INT:
        if not is_int or not low <= value <= high:
            raise ConfigError(f"{what} must be a whole number from {low:,} to {high:,}"
                              f"{' (or null for all)' if optional else ''}; got {_describe(value)}")
        return int(value)
    ok = is_real and math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{what} must be a finite number in {bracket}{low:g}, {high:g}]; got {_describe(value)}")
    if name in _WHOLE_WHEN_INTEGRAL and float(value).is_integer():
        return int(value)
    return float(value)


def check_value(name: str, value: Any, label: str) -> Any:
    """``value`` checked against the rules of config key ``name`` (for CLI flags and other front ends)."""
    try:
        return _checked(name, value, label)
    except ConfigError as error:
        raise ConfigError(str(error).strip()) from None


def _device_index_ok(device: str) -> bool:
    """'cuda' or 'cuda:N' with a whole N >= 0 (and no index on the others)."""
    kind, _, index = device.partition(":")
    return not index or (kind == "cuda" and index.isdigit())
