"""How far a lever's lead on validation carries to the test window after it: the premise of every choice.

Run after learning_levers.py, on its --out folder; nothing is trained. Every stored outcome of every
lever (``OUT/<lever>/.../fold_outcome.json`` for the seeds' models, ``ensemble_mean_q.json`` for the
fold's ensemble) gives, per (calendar window, market), the excess Sharpe over buy-and-hold on the
validation window and on the test window after it. A lever's *effect* on a window is its excess
minus the mean excess of every lever run on that same window and market (so the market's own ups
and downs cancel). Printed per lens: the rank correlation between the levers' effects on validation
and on test, with a 95% interval from resampling calendar windows (a window's markets move
together). Near 1: the validation ranking of levers is the test ranking; near 0: choosing on that lens
is choosing on noise. Then the ensemble's own gain: the fold's mean-Q ensemble minus the mean of the
seeds it combines, on validation and on test, over every lever's windows.

    PYTHONPATH=src python benchmarks/validation_transfer.py --out runs/screen
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

LENSES = {"seeds (chosen models)": "fold_outcome.json", "ensemble (mean Q)": "ensemble_mean_q.json"}
MIN_LEVERS = 3  # a window's effects need a few levers to mean anything
RESAMPLES = 2000

Effects = list[tuple[str, float, float]]  # (calendar window, validation effect, test effect)


def excess(metrics: dict[str, Any]) -> float:
    return float(metrics["agent"]["sharpe"] - metrics["buy_and_hold"]["sharpe"])


def lever_effects(out: Path, file_name: str) -> Effects:
    """Each (lever, window, market)'s validation and test effect (its excess minus the window's mean)."""
    runs: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(out.glob(f"*/**/{file_name}")):
        lever = path.relative_to(out).parts[0]
        outcome = json.loads(path.read_text())
        window = str(outcome["job"]["validation_start"])
        views = outcome["markets"].items() if "markets" in outcome else [(outcome["job"]["market"], outcome)]
        for market, view in views:
            runs[(window, market)][lever].append((excess(view["validation_backtest"]), excess(view["test"])))
    effects: Effects = []
    for (window, _), by_lever in runs.items():
        if len(by_lever) < MIN_LEVERS:
            continue
        means = np.array([np.mean(pairs, axis=0) for pairs in by_lever.values()])  # (levers, 2): seeds' mean
        centred = means - means.mean(axis=0)
        effects += [(window, float(v), float(t)) for v, t in centred]
    return effects


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    values, inverse = np.unique(np.asarray(x), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: the correlation of the ranks."""
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def transfer(effects: Effects, seed: int = 0) -> tuple[float, float, float]:
    """Rank correlation of validation and test effects, and its 95% interval over calendar windows."""
    windows = sorted({w for w, _, _ in effects})
    by_window = {w: np.array([(v, t) for x, v, t in effects if x == w]) for w in windows}
    both = np.concatenate(list(by_window.values()))
    rho = rank_correlation(both[:, 0], both[:, 1])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(RESAMPLES):
        sample = np.concatenate([by_window[windows[i]] for i in rng.integers(0, len(windows), len(windows))])
        draws.append(rank_correlation(sample[:, 0], sample[:, 1]))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return rho, float(low), float(high)


def _views(outcome: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return outcome["markets"] if "markets" in outcome else {outcome["job"]["market"]: outcome}


def ensemble_gains(out: Path) -> list[tuple[str, float, float]]:
    """(calendar window, validation gain, test gain) per (lever, window, market): the ensemble's excess
    Sharpe minus the mean of its seeds' (the models it combines), for every stored ensemble."""
    gains = []
    for path in sorted(out.glob(f"*/**/{LENSES['ensemble (mean Q)']}")):
        ensemble = json.loads(path.read_text())
        seeds = [json.loads(p.read_text()) for seed in ensemble["job"]["seeds"]
                 if (p := path.parent / f"seed_{seed}" / LENSES["seeds (chosen models)"]).is_file()]
        if len(seeds) != len(ensemble["job"]["seeds"]):
            continue  # a member's outcome is not here (a Ray node kept it): no fair pairing
        window = str(ensemble["job"]["validation_start"])
        for market, view in _views(ensemble).items():
            members = [_views(seed)[market] for seed in seeds]
            gains.append((window, *(excess(view[part]) - float(np.mean([excess(m[part]) for m in members]))
                                    for part in ("validation_backtest", "test"))))
    return gains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="learning_levers.py's --out folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.is_dir():
        print(f"error: --out {out} is not a folder; give learning_levers.py's --out folder", file=sys.stderr)
        return 2
    rows = []
    for lens, file_name in LENSES.items():
        effects = lever_effects(out, file_name)
        if not effects:
            rows.append([lens, 0, 0, "-"])
            continue
        rho, low, high = transfer(effects)
        rows.append([lens, len(effects), len({w for w, _, _ in effects}), f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]"])
    print(f"{out}: levers with outcomes on the same windows; {machine()}\n")
    print(table(["lens", "effects", "calendar windows", "rank corr validation -> test [95% CI]"], rows))
    gains = ensemble_gains(out)
    if gains:
        from nexlify.evaluation.verdict import bootstrap_mean_ci

        cells = []
        for column, part in ((1, "validation"), (2, "test")):
            values = [g[column] for g in gains]
            low, high = bootstrap_mean_ci(values, clusters=[g[0] for g in gains])
            cells.append([part, len(values), f"{np.mean(values):+.2f} [{low:+.2f}, {high:+.2f}]",
                          f"{sum(v > 0 for v in values)}/{len(values)}"])
        print("\nthe mean-Q ensemble minus the mean of its seeds (every lever's windows):")
        print(table(["window", "pairs", "excess Sharpe gain [95% CI]", "ensemble better"], cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
