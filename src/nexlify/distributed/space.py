"""The search space of ``nexlify sweep``: a small JSON format, validated against TrainingConfig.

A space file is one JSON object; each key is a config key, each value one distribution::

    {
      "learning_rate": {"loguniform": [1e-5, 1e-3]},
      "gamma": {"uniform": [0.95, 0.999]},
      "n_step": {"choice": [1, 3, 5]},
      "target_update_interval": {"randint": [100, 1000]}
    }

``choice`` picks one of the listed values; ``uniform`` and ``loguniform`` draw a real number between
the two ends; ``randint`` draws a whole number between the two ends, both included. Keys that describe
the machine, the costs, the run's length or the objective itself cannot be searched (see
``NOT_SEARCHABLE``). Every value the space can produce is checked against TrainingConfig up front,
so a typo fails before any trial starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from nexlify.config import TrainingConfig, config_keys
from nexlify.errors import ConfigError
from nexlify.io import check_input_file

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# Why each of these is not a hyperparameter of the agent.
NOT_SEARCHABLE: dict[str, str] = {
    **{key: "the hardware plan sets it for the machine each trial lands on" for key in (
        "device", "num_workers", "use_mixed_precision", "precision", "env_backend", "optimization_level",
        "memory_reserve_gb", "checkpoint_compression")},
    **{key: "costs and capital are facts of the market, the same for every policy" for key in (
        "initial_balance", "fee", "slippage")},
    "seed": "seeds measure luck; use --seeds",
    "episodes": "every trial trains the same budget; use --episodes",
    "data_days": "the walk-forward windows choose the data",
    "eval_interval": "early stopping compares trials at the same validation checks",
    "save_interval": "it changes where checkpoints land, not what is learned",
    "validation_metric": "it is the objective itself; set it with --config",
}


def read_space(path: str | Path) -> dict[str, dict[str, list[Any]]]:
    """The validated space in ``path``; ConfigError naming the key and the fix otherwise."""
    try:
        space = json.loads(check_input_file("--space", path).read_text())
    except OSError as exc:  # unreadable (permissions, a device)
        raise ConfigError(f"--space file {path} cannot be read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--space file {path} is not valid JSON: {exc}") from None
    return validate_space(space, label=f"--space {path}")


def validate_space(space: Any, label: str = "space") -> dict[str, dict[str, list[Any]]]:
    """Check the format and that every value the space can produce is a valid config value."""
    example = '{"learning_rate": {"loguniform": [1e-5, 1e-3]}, "n_step": {"choice": [1, 3, 5]}}'
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{label}: expected a JSON object of config keys to search, like {example}")
    valid = set(config_keys())
    int_keys = {f.name for f in fields(TrainingConfig) if type(f.default) is int}
    for key, spec in space.items():
        if key not in valid:
            raise ConfigError(f"{label}: unknown config key {key!r}; searchable keys: {', '.join(searchable_keys())}")
        if key in NOT_SEARCHABLE:
            raise ConfigError(f"{label}: {key} cannot be searched: {NOT_SEARCHABLE[key]}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(f"{label}: {key} needs exactly one of {', '.join(DISTRIBUTIONS)}, "
                              f"like {{\"uniform\": [0.9, 0.99]}}; got {spec!r}")
        kind, values = next(iter(spec.items()))
        _check_values(label, key, kind, values, key in int_keys)
        for value in values:
            try:
                TrainingConfig().with_overrides({key: value})
            except ConfigError as exc:
                raise ConfigError(f"{label}: {key} {kind} {values}: {exc}") from None
    return space


def _check_values(label: str, key: str, kind: str, values: Any, whole: bool) -> None:
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{label}: {key} choice needs a non-empty list of values, got {values!r}")
        return
    numbers = isinstance(values, list) and len(values) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not numbers or not values[0] < values[1]:
        raise ConfigError(f"{label}: {key} {kind} needs [low, high] with low < high, got {values!r}")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{label}: {key} randint needs whole-number ends, got {values!r}")
    if kind in ("uniform", "loguniform") and whole:
        raise ConfigError(f"{label}: {key} takes whole numbers; use randint or choice instead of {kind}")
    if kind == "loguniform" and values[0] <= 0:
        raise ConfigError(f"{label}: {key} loguniform needs a low end > 0, got {values!r}")


def searchable_keys() -> list[str]:
    """Config keys a space file may name."""
    return [key for key in config_keys() if key not in NOT_SEARCHABLE]


def tune_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """The Ray Tune search space of a validated ``space``."""
    from ray import tune

    build = {
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),  # Tune's upper end is exclusive
    }
    return {key: build[kind](values) for key, spec in space.items() for kind, values in spec.items()}


def plain_values(sample: dict[str, Any]) -> dict[str, Any]:
    """A sampled trial config as plain Python numbers (Tune may hand out numpy scalars)."""
    import numpy as np

    def plain(value: Any) -> Any:
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        return value.item() if isinstance(value, np.generic) else value

    return {key: plain(value) for key, value in sample.items()}
