"""The model choice: which of a run's validated models act for it out of sample.

A run validates its greedy policy every ``eval_interval`` episodes (a fraction of one too: 0.5 validates
twice an episode); each validated model is a *snapshot* (kept on disk as ``validated_ep{N}.pth``, N
the episodes done, e.g. ``validated_ep2.pth`` or ``validated_ep2.5.pth``, when ``keep_validated_models``
is on). Scoring the best snapshot on the window it was chosen on flatters it; chosen on one half of a
validation window and scored on the other, the four rules below were level over nine seeds (docs/benchmarks.md,
"The model choice judged on held-out halves of validation"); at the walk-forward's defaults over seven seed
sets ``last`` led ``best`` in five (session 25) and is ``nexlify walkforward``'s default since; an
ensemble of each run's last two or three snapshots scored a little below it (session 26). The rules:

* ``best``: each run's best-scoring snapshot (what ``best_model.pth`` holds);
* ``top2``: each run's two best-scoring snapshots;
* ``last``: each run's last snapshot (no choice at all; a run validates where it ends, so this is its
  final model, ``final_model.pth``);
* ``all``: every snapshot of every run (an ensemble that averages the snapshots' macro bets).

Ties go to the earlier snapshot, as in the trainer (a later one must score strictly higher).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from nexlify.errors import ConfigError

MODEL_CHOICES: tuple[str, ...] = ("best", "top2", "last", "all")
VALIDATED_MODEL = "validated_ep{episode}.pth"


def episode_label(episodes: float | Fraction) -> int | float:
    """Episodes done as a validation record and a file name show them: a whole number as an int (``2``),
    a fraction of an episode as a float (``2.5``), so whole-episode runs read exactly as before."""
    value = Fraction(episodes).limit_denominator(1_000_000)
    return int(value) if value.denominator == 1 else float(value)


@lru_cache(maxsize=64)
def exact_interval(eval_interval: float) -> Fraction:
    """``eval_interval`` as an exact fraction of episodes (0.5 -> 1/2, 1/3 as a float -> 1/3), so marks
    land on the same transitions on every machine; cached, as the trainer asks at every step."""
    return Fraction(eval_interval).limit_denominator(1_000_000)


def validation_checks(episodes: int, eval_interval: float) -> int:
    """Validations a run of ``episodes`` makes: one per ``eval_interval`` episodes (a fraction of one
    too), and one more where the run ends when that is not a multiple."""
    return math.ceil(Fraction(episodes) / exact_interval(eval_interval))


def validated_model_file(episodes: float) -> str:
    """The file name of the snapshot validated after ``episodes`` episodes."""
    return VALIDATED_MODEL.format(episode=episode_label(episodes))


@dataclass(frozen=True)
class Snapshot:
    """One validated model of a run: when it was taken (episodes done), its validation score and its file."""

    episode: int | float
    score: float
    path: Path


def run_snapshots(run_dir: str | Path, history: Sequence[dict[str, Any]]) -> list[Snapshot]:
    """A run's snapshots in episode order, from its validation ``history`` (``{"episode", "score"}``
    records, as in ``training_results.json`` or a fold outcome) and the files in ``run_dir``.

    ConfigError names the first missing file: the run was trained without ``keep_validated_models``.
    """
    snapshots = []
    for record in sorted(history, key=lambda r: float(r["episode"])):
        path = Path(run_dir) / validated_model_file(record["episode"])
        if not path.is_file():
            raise ConfigError(f"{path} not found: the run kept only its best model; train it with the "
                              "config key keep_validated_models set to true to choose among its snapshots")
        snapshots.append(Snapshot(episode_label(record["episode"]), float(record["score"]), path))
    return snapshots


def choose(runs: Sequence[Sequence[Snapshot]], rule: str) -> list[Snapshot]:
    """The snapshots that act together (one ensemble) under ``rule``, from each run's snapshots."""
    if rule not in MODEL_CHOICES:
        raise ConfigError(f"model choice must be one of {', '.join(MODEL_CHOICES)}; got {rule!r}")
    empty = [i for i, run in enumerate(runs) if not run]
    if not runs or empty:
        raise ConfigError("every run needs at least one validated snapshot to choose from")
    chosen: list[Snapshot] = []
    for run in runs:
        ordered = sorted(run, key=lambda s: s.episode)
        if rule == "all":
            chosen.extend(ordered)
        elif rule == "last":
            chosen.append(ordered[-1])
        else:
            # Highest score first; among equal scores the earliest (Python's sort is stable).
            ranked = sorted(ordered, key=lambda s: -s.score)
            chosen.extend(sorted(ranked[: 1 if rule == "best" else 2], key=lambda s: s.episode))
    return chosen
