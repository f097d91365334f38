"""A walk-forward fold's seeds acting as one policy: their chosen models combined by mean Q or vote.

Seeds of one configuration disagree most where the data says least; their ensemble is usually a
steadier policy than any one of them (``nexlify.evaluation.ensemble``). Once every seed of a
(market or pool, fold) has finished, the models the model choice picks from each seed's validated
snapshots (``nexlify.evaluation.snapshots``: by default each seed's last, its final model) are loaded
and the ensemble is backtested on each market's validation and test windows. The result is written
next to the seeds' folders, so a resumed walk-forward reads it back instead of recomputing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nexlify.errors import ConfigError

ENSEMBLE_FILE = "ensemble_{mode}.json"


def ensemble_file_name(mode: str, choice: str = "best") -> str:
    """The file name of a fold's ensemble of ``mode`` over the model choice ``choice``: a fold judged
    several ways keeps one file per way."""
    return ENSEMBLE_FILE.format(mode=mode if choice == "best" else f"{mode}_{choice}")


def ensemble_file(members: Sequence[Any], mode: str, choice: str = "best") -> Path:
    """Where the ensemble of ``members`` (FoldJobs of one fold, one per seed) is stored."""
    return Path(members[0].output_dir).parent / ensemble_file_name(mode, choice)


def models_present(members: Sequence[Any]) -> bool:
    """Whether every seed's best model is on this machine (a Ray node may keep its own on its disk)."""
    from nexlify.training.trainer import BEST_MODEL

    return all((Path(job.output_dir) / BEST_MODEL).is_file() for job in members)


def run_fold_ensemble(members: Sequence[Any], mode: str, choice: str = "best",
                      outcomes: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The ensemble outcome of one fold's seed jobs (same market or pool, fold and settings), its
    members the snapshots ``choice`` picks from each seed (``snapshots.choose``) by the validation
    histories in the seeds' ``outcomes`` (needed unless ``choice`` is ``best``).

    Shaped like ``run_fold_job``'s outcome, with ``job.ensemble`` = ``mode``, ``job.seeds`` and
    ``job.model_choice``.
    """
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.evaluation.fold_markets import by_market, market_backtests, market_splits
    from nexlify.evaluation.report import write_results_json

    members = sorted(members, key=lambda job: job.seed)
    keys = {(job.market, job.fold) for job in members}
    if len(keys) != 1:
        raise ConfigError(f"an ensemble combines the seeds of one fold; got {sorted(keys)}")
    seeds = [job.seed for job in members]
    path = ensemble_file(members, mode, choice)
    job = {**members[0].to_dict(), "seed": min(seeds), "seeds": seeds, "ensemble": mode, "model_choice": choice}
    stored = _read(path)
    if stored is not None and stored.get("job") == json.loads(json.dumps(job)):
        return stored
    models = chosen_models(members, choice, outcomes)
    agents = [AdaptiveDQNAgent.from_checkpoint(model, device="cpu") for model in models]
    config = TrainingConfig().with_overrides({**members[0].config_overrides, "data_days": None})
    policy = ensemble_policy(agents, mode)
    markets = market_splits(members[0], config.feature_set)
    outcome = {
        "job": job,
        "periods_per_year": next(iter(markets.values())).periods_per_year,
        "validation": {"metric": config.validation_metric, "members": seeds,
                       "models": [str(Path(model).relative_to(path.parent)) for model in models]},
        **by_market({name: market_backtests(policy, splits, config, baseline_cache=path.parent)
                     for name, splits in markets.items()},
                    pooled=bool(members[0].pool)),
    }
    write_results_json(path, outcome)
    return outcome


def chosen_models(members: Sequence[Any], choice: str, outcomes: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """The model files of the seeds' snapshots ``choice`` picks by the validation histories in
    ``outcomes`` (the seeds' fold outcomes); ``best``: each seed's best_model.pth; ``last``: each
    seed's final_model.pth."""
    from nexlify.evaluation.snapshots import choose, run_snapshots
    from nexlify.training.trainer import BEST_MODEL, FINAL_MODEL

    # The same snapshots, kept by every run whatever keep_validated_models says: a run always validates
    # where it ends, so its last snapshot is its final model.
    kept_by_every_run = {"best": BEST_MODEL, "last": FINAL_MODEL}
    if choice in kept_by_every_run:
        return [Path(m.output_dir) / kept_by_every_run[choice] for m in members]
    history = {int(o["job"]["seed"]): o["validation"]["history"] for o in outcomes if not o["job"].get("ensemble")}
    missing = [m.label for m in members if m.seed not in history]
    if missing:
        raise ConfigError(f"no finished outcome of {', '.join(missing)}: the model choice {choice!r} "
                          "chooses by every seed's validation history")
    runs = [run_snapshots(m.output_dir, history[m.seed]) for m in members]
    return [snapshot.path for snapshot in choose(runs, choice)]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
