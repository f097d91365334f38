"""Two or more finished `nexlify walkforward` runs paired on their shared validation windows.

For a setting the lever screen cannot express (a walk-forward flag such as ``--anchored``, or a run at
the walk-forward's own defaults), run ``nexlify walkforward`` once per setting into its own
``--checkpoint-dir`` with the same markets, folds and validation length, then compare the folders
here with the lever screen's four lenses (``learning_levers.paired_against``): the seeds' chosen
models, the fold's ensemble, the unselected last checkpoint and the mean of every validated
checkpoint, each run minus the first.

    PYTHONPATH=src python benchmarks/pair_walkforwards.py runs/rolling runs/anchored

One configuration run again with other seeds (``--seed``) is given as its folders joined by commas,
``runs/rolling_s42,runs/rolling_s45``: its seeds then count as one larger set, each window's value the
mean over all of them, which halves the training luck a single set of three seeds leaves in a pairing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from learning_levers import paired_against  # noqa: E402

from nexlify.evaluation.defaults import ENSEMBLE_MODES  # noqa: E402
from nexlify.evaluation.fold_ensemble import ensemble_file_name  # noqa: E402
from nexlify.evaluation.snapshots import MODEL_CHOICES  # noqa: E402

SEED_FILE = "fold_outcome.json"


def stored_outcomes(folder: Path, mode: str = "mean_q", choice: str = "best") -> SimpleNamespace:
    """A walk-forward folder's stored outcomes as the lever screen's per-market views: the seeds', and
    the fold ensembles of ``mode`` over the model choice ``choice`` (one file per fold: a folder judged
    several ways holds one per way, and only one way may be paired)."""
    views: list[dict[str, Any]] = []
    for pattern in (SEED_FILE, ensemble_file_name(mode, choice)):
        for path in sorted(folder.glob(f"*/fold_*/**/{pattern}")):
            outcome = json.loads(path.read_text())
            job, ensemble = outcome["job"], bool(outcome["job"].get("ensemble"))
            markets = outcome["markets"] if "markets" in outcome else {job["market"]: outcome}
            for market, view in markets.items():
                views.append({"job": {**job, "market": market, "pooled": "markets" in outcome},
                              "validation_backtest": view["validation_backtest"],
                              "validation": None if ensemble else outcome.get("validation")})
    return SimpleNamespace(outcomes=views)


def seed_sets(folders: list[Path], mode: str = "mean_q", choice: str = "best") -> SimpleNamespace:
    """Several runs of one configuration as one: their stored outcomes together, so every lens averages
    each window over all of their seeds (and the seed sets' ensembles). Refuses runs that share a seed
    (the same jobs counted twice) or that do not cover the same validation windows (other layouts)."""
    runs = [stored_outcomes(folder, mode, choice) for folder in folders]
    seeds = [{view["job"]["seed"] for view in run.outcomes if not view["job"].get("ensemble")} for run in runs]
    windows = [{(view["job"]["market"], str(view["job"]["validation_start"])) for view in run.outcomes}
               for run in runs]
    seen = set(seeds[0])
    for folder, its_seeds, its_windows in zip(folders[1:], seeds[1:], windows[1:], strict=True):
        if its_seeds & seen:
            raise ValueError(f"{folder} repeats seed(s) {sorted(its_seeds & seen)} of the runs joined before it; "
                             "join only runs of one configuration with other seeds (--seed)")
        seen |= its_seeds
        if its_windows != windows[0]:
            raise ValueError(f"{folders[0]} and {folder} cover other validation windows; join only runs with the "
                             "same markets, folds and window lengths")
    return SimpleNamespace(outcomes=[view for run in runs for view in run.outcomes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="walk-forward --checkpoint-dir folders, one per configuration "
                        "(several runs of one configuration with other seeds: their folders joined by commas); "
                        "the first is the reference")
    parser.add_argument("--ensemble", choices=ENSEMBLE_MODES, default="mean_q",
                        help="which fold ensembles to pair, in folders judged several ways (default: mean_q)")
    parser.add_argument("--model-choice", choices=MODEL_CHOICES, default="best",
                        help="the model choice those ensembles were built from (default: best)")
    args = parser.parse_args(argv)
    groups = [(name, [Path(folder) for folder in name.split(",") if folder]) for name in args.folders]
    folders = [folder for _, group in groups for folder in group]
    for folder in folders:
        if not (folder / "walkforward_results.json").is_file():
            print(f"error: {folder} holds no finished walk-forward (no walkforward_results.json); give the "
                  "--checkpoint-dir of a `nexlify walkforward` run", file=sys.stderr)
            return 2
    if len(groups) < 2:
        print("error: give at least two walk-forward folders to pair", file=sys.stderr)
        return 2
    # A folder given twice would pair with itself under one name and drop out of the table unnoticed.
    repeated = sorted({str(f) for f in folders if sum(g.resolve() == f.resolve() for g in folders) > 1})
    if repeated:
        print(f"error: {', '.join(repeated)} given more than once; give each walk-forward folder once",
              file=sys.stderr)
        return 2
    runs = {}
    for name, group in groups:
        try:
            runs[name] = seed_sets(group, args.ensemble, args.model_choice)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    text, _ = paired_against(runs, args.folders[0])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
