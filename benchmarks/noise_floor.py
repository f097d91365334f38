"""The judge's noise floor: runs of one configuration split into a pretend lever and its reference.

``model_choice.py --reference`` judges a lever by how far it moves each rule's excess Sharpe from a
reference's, on held-out halves of validation, paired by window. How far apart are two sets of runs
of the *same* configuration? Every split of the runs into two equal sides is judged exactly as a lever
against its reference would be; the spread of those differences is the smallest effect the judge can
tell from seed luck at that many runs a side. Reads the records ``model_choice.py --out`` wrote (one
run per seed set); nothing is trained or backtested:

    PYTHONPATH=src python benchmarks/noise_floor.py --records mc_def45.json mc_def48.json mc_def51.json \\
        mc_def54.json --runs wf_all_def45,wf_all_def48,wf_all_def51,wf_all_def54
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402
from model_choice import RULES, load_records, paired_stats, window_values  # noqa: E402

LENSES = ("nested", "test")
Records = dict[str, list[dict[str, Any]]]


def splits(names: list[str], side: int) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every way to pick two disjoint sides of ``side`` runs each, each unordered pair once (the side
    holding the earliest-named run is called the lever)."""
    found = []
    for chosen in itertools.combinations(names, 2 * side):
        for lever in itertools.combinations(chosen, side):
            if chosen[0] in lever:
                found.append((lever, tuple(name for name in chosen if name not in lever)))
    return found


def pooled(records: Records, names: tuple[str, ...], rule: str, lens: str) -> dict[tuple[str, int], float]:
    """Each window's value, the mean over the named runs."""
    return window_values([r for name in names for r in records[name]], rule, lens)


def run_means(records: Records, names: list[str], rule: str, lens: str) -> list[float]:
    """Each run's mean over its windows."""
    return [float(np.mean(list(window_values(records[name], rule, lens).values()))) for name in names]


def floor_rows(records: Records, names: list[str], side: int) -> list[list[object]]:
    """One row per rule and lens: each run's mean, their spread, the spread a side-vs-side difference
    would have if runs were independent, and the splits' differences as the judge reports them."""
    rows: list[list[object]] = []
    for rule in RULES:
        for lens in LENSES:
            means = run_means(records, names, rule, lens)
            spread = float(np.std(means, ddof=1))
            found = [paired_stats(pooled(records, lever, rule, lens), pooled(records, reference, rule, lens))
                     for lever, reference in splits(names, side)]
            differences = [mean for mean, *_ in found]
            wrong = sum(low > 0 or high < 0 for _, low, high, _, _ in found)
            rows.append([rule, lens, " ".join(f"{m:+.2f}" for m in means), f"{spread:.2f}",
                         f"{spread * math.sqrt(2 / side):.2f}",
                         f"{math.sqrt(np.mean(np.square(differences))):.2f}",
                         f"{max(abs(d) for d in differences):.2f}", f"{wrong}/{len(found)}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", nargs="+", required=True, help="model_choice.py --out files (joined)")
    parser.add_argument("--runs", required=True, help="comma-separated run names of one configuration (4 or more)")
    parser.add_argument("--side", type=int, default=None, help="runs a side (default: half of the runs)")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.records)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = args.runs.split(",")
    unknown = [name for name in names if name not in records]
    if unknown:
        print(f"error: --runs names runs not in the records: {', '.join(unknown)} (there: {', '.join(records)})",
              file=sys.stderr)
        return 2
    if len(names) < 2:
        print(f"error: --runs needs two or more runs of one configuration; got {len(names)}", file=sys.stderr)
        return 2
    side = args.side or len(names) // 2
    if side < 1 or 2 * side > len(names):
        print(f"error: --side {side} needs {2 * max(side, 1)} runs or more; --runs names {len(names)}",
              file=sys.stderr)
        return 2
    print(f"{len(names)} runs of one configuration; every split into two sides of {side} run(s) judged as a lever "
          f"against its reference (model_choice.py --reference), paired by window, t interval over folds.\n"
          f"'implied SD': the spread of a {side}-vs-{side} difference if runs vary independently (run SD x "
          f"sqrt(2/{side})); 'RMS' and 'largest': the splits' differences; 'intervals off 0': splits whose "
          "95% interval excludes 0 (each a false positive).\n")
    print(table(["rule", "lens", "each run's mean", "run SD", "implied SD", "splits RMS", "largest",
                 "intervals off 0"], floor_rows(records, names, side)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
