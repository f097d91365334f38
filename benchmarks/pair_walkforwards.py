"""Two or more finished `nexlify walkforward` runs paired on their shared validation windows.

For a setting the lever screen cannot express (a walk-forward flag such as ``--anchored``, or a run at
the walk-forward's own defaults), run ``nexlify walkforward`` once per setting into its own
``--checkpoint-dir`` with the same markets, folds and validation length, then compare the folders
here with the lever screen's four lenses (``learning_levers.paired_against``): the seeds' chosen
models, the fold's ensemble, the unselected last checkpoint and the mean of every validated
checkpoint, each run minus the first.

    PYTHONPATH=src python benchmarks/pair_walkforwards.py runs/rolling runs/anchored
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

OUTCOME_FILES = ("fold_outcome.json", "ensemble_*.json")


def stored_outcomes(folder: Path) -> SimpleNamespace:
    """A walk-forward folder's stored outcomes as the lever screen's per-market views."""
    views: list[dict[str, Any]] = []
    for pattern in OUTCOME_FILES:
        for path in sorted(folder.glob(f"*/fold_*/**/{pattern}")):
            outcome = json.loads(path.read_text())
            job, ensemble = outcome["job"], bool(outcome["job"].get("ensemble"))
            markets = outcome["markets"] if "markets" in outcome else {job["market"]: outcome}
            for market, view in markets.items():
                views.append({"job": {**job, "market": market, "pooled": "markets" in outcome},
                              "validation_backtest": view["validation_backtest"],
                              "validation": None if ensemble else outcome.get("validation")})
    return SimpleNamespace(outcomes=views)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="walk-forward --checkpoint-dir folders; the first is the reference")
    args = parser.parse_args(argv)
    folders = [Path(folder) for folder in args.folders]
    for folder in folders:
        if not (folder / "walkforward_results.json").is_file():
            print(f"error: {folder} holds no finished walk-forward (no walkforward_results.json); give the "
                  "--checkpoint-dir of a `nexlify walkforward` run", file=sys.stderr)
            return 2
    if len(folders) < 2:
        print("error: give at least two walk-forward folders to pair", file=sys.stderr)
        return 2
    text, _ = paired_against({str(folder): stored_outcomes(folder) for folder in folders}, str(folders[0]))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
