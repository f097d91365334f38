"""Each window started in cash, or in the position the policy holds after trading the bars before it:
the product's ``best`` ensemble of a walk-forward's stored runs, both ways, against buy-and-hold.

Every backtest of the walk-forward (validation during training, every test window) starts in cash, so
a retrained model enters only on its own signal: the strategy "sell at each retrain, let the new
model buy back". A trader who keeps trading through a retrain would instead hold what the model
holds by then. This measures what that costs or gains, nothing trained: the same chosen models, each
window scored from cash (``flat``) and carried in from the bars before it (``carried``: the other
half of validation for the second half, the last half-window of training for the first half, the
whole validation window for test), on the lenses of ``model_choice.py``: chosen on one validation
half and scored on the other (nested, forward), and test (chosen on the whole validation window), as
it falls. Reads ``nexlify walkforward --model-choice all`` checkpoint folders:

    PYTHONPATH=src python benchmarks/warm_start.py runs/wf_a runs/wf_b --out warm.json
    PYTHONPATH=src python benchmarks/warm_start.py --records warm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402
from model_choice import HALVES, fold_groups, half, load_fold, paired_stats  # noqa: E402

LENSES = ("nested", "forward", "test")


def joined(before: Any, window: Any) -> Any:
    """Two MarketSlices one after the other, as one."""
    return replace(before, **{f.name: np.concatenate([getattr(before, f.name), getattr(window, f.name)])
                              for f in fields(before)})


def last_rows(market: Any, rows: int) -> Any:
    """The last ``rows`` rows of a MarketSlice."""
    return replace(market, **{f.name: getattr(market, f.name)[-rows:] for f in fields(market)})


def carried_sharpe(window: Any, before: Any, policy: Any, periods_per_year: float,
                   **costs: float) -> tuple[float, float]:
    """``policy`` trades through ``before`` and on into ``window``: the window's Sharpe (its equity from
    the window's first candle on) and the position level it started the window with."""
    from nexlify.evaluation.backtest import run_policy
    from nexlify.evaluation.metrics import sharpe_ratio

    result = run_policy(joined(before, window), policy, "carried", periods_per_year, **costs)
    start = len(before)  # equity[k] is the equity at candle k; position[k] the level held into it
    return sharpe_ratio(result.equity[0, start:], periods_per_year), float(result.position[0, start])


def fold_study(members: list[Any]) -> list[dict[str, Any]]:
    """One fold's ``best`` ensemble, each window scored flat and carried, minus buy-and-hold's Sharpe
    (which buys at the window's first candle either way). One record per market."""
    from nexlify.evaluation.backtest import buy_and_hold_policy, run_policy
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.evaluation.snapshots import choose

    members, costs, runs, agents, markets = load_fold(members)
    ppy = {name: s.periods_per_year for name, s in markets.items()}

    def policy(snapshots: list[Any]) -> Any:
        return ensemble_policy([agents[s.path] for s in snapshots])

    def flat(snapshots: list[Any], window: Any, name: str) -> float:
        return float(run_policy(window, policy(snapshots), "flat", ppy[name], **costs).metrics["sharpe"])

    windows = {name: {"first": half(s.validation, "first"), "second": half(s.validation, "second"),
                      "test": s.test} for name, s in markets.items()}
    # What precedes each window: the first half for the second, training's last half-window for the
    # first, the whole validation window for test.
    before = {name: {"second": windows[name]["first"],
                     "first": last_rows(s.train, len(windows[name]["first"])), "test": s.validation}
              for name, s in markets.items()}
    # Each snapshot alone on each half, from cash (the trainer's scores): what `best` chooses by.
    alone = {(s.path, which): np.mean([flat([s], windows[m][which], m) for m in markets])
             for run in runs for s in run for which in HALVES}
    records = []
    for name in markets:
        hold = {which: run_policy(windows[name][which], buy_and_hold_policy, "buy_and_hold", ppy[name],
                                  **costs).metrics["sharpe"] for which in (*HALVES, "test")}
        record: dict[str, Any] = {"market": name, "fold": members[0].fold, "seeds": [j.seed for j in members]}
        chosen = {which: choose([[replace(s, score=alone[(s.path, which)]) for s in run] for run in runs], "best")
                  for which in HALVES}
        chosen["test"] = choose(runs, "best")  # the trainer's own choice, on the whole validation window
        for key, scored_on, snapshots in (("first_to_second", "second", chosen["first"]),
                                          ("second_to_first", "first", chosen["second"]),
                                          ("test", "test", chosen["test"])):
            window = windows[name][scored_on]
            sharpe, level = carried_sharpe(window, before[name][scored_on], policy(snapshots), ppy[name], **costs)
            record[key] = {"flat": flat(snapshots, window, name) - hold[scored_on],
                           "carried": sharpe - hold[scored_on], "start_level": level}
        records.append(record)
    return records


def window_values(records: list[dict[str, Any]], start: str, lens: str) -> dict[tuple[str, int], float]:
    """Per (market, fold): ``start``'s excess Sharpe on ``lens``, averaged over the runs sharing it."""
    values: dict[tuple[str, int], list[float]] = {}
    for r in records:
        value = (r["test"][start] if lens == "test" else r["first_to_second"][start] if lens == "forward"
                 else (r["first_to_second"][start] + r["second_to_first"][start]) / 2)
        values.setdefault((r["market"], r["fold"]), []).append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def report(records: dict[str, list[dict[str, Any]]]) -> str:
    """Per run and pooled: each lens's mean excess flat and carried, and carried minus flat paired by
    window (t interval over folds, windows better)."""
    groups = dict(records)
    if len(records) > 1:
        groups["pooled"] = [r for rs in records.values() for r in rs]
    rows = []
    for label, rs in groups.items():
        for lens in LENSES:
            flat, carried = window_values(rs, "flat", lens), window_values(rs, "carried", lens)
            mean, low, high, better, count = paired_stats(carried, flat)
            key = "test" if lens == "test" else "first_to_second"
            starts_long = sum(r[key]["start_level"] > 0 for r in rs)
            rows.append([label, lens, f"{np.mean(list(flat.values())):+.2f}", f"{np.mean(list(carried.values())):+.2f}",
                         f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] {better}/{count}", f"{starts_long}/{len(rs)}"])
    return table(["runs", "lens", "flat", "carried", "carried minus flat", "carried in long"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="walk-forward checkpoint folders trained with --model-choice all")
    parser.add_argument("--jobs", type=int, default=2, help="folds studied at once")
    parser.add_argument("--out", default=None, help="JSON file for the records (default: none)")
    parser.add_argument("--records", default=None, help="records an earlier --out wrote, instead of studying runs")
    args = parser.parse_args(argv)
    if args.records:
        try:
            records = json.loads(Path(args.records).read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: cannot read records from {args.records} ({exc.__class__.__name__}); give a file "
                  "that warm_start.py --out wrote", file=sys.stderr)
            return 2
    else:
        if not args.runs:
            parser.error("give the run folders to study, or --records")
        by_run = {Path(folder).name: fold_groups(Path(folder)) for folder in args.runs}
        empty = [name for name, folds in by_run.items() if not folds]
        if empty:
            print(f"error: no finished jobs (*/fold_*/seed_*/fold_outcome.json) under {', '.join(empty)}",
                  file=sys.stderr)
            return 2
        started = time.perf_counter()
        tasks = [(name, members) for name, folds in by_run.items() for members in folds]
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(fold_study, [members for _, members in tasks]))
        records = {name: [] for name in by_run}
        for (name, _), fold_records in zip(tasks, done, strict=True):
            records[name].extend(fold_records)
        print(f"{machine()}; {len(tasks)} folds in {time.perf_counter() - started:.0f} s\n")
    print("Excess Sharpe over buy-and-hold of each fold's best ensemble, each window started in cash (flat) "
          "or in the position the policy holds after trading the bars before it (carried); nested and "
          "forward: chosen on one validation half, scored on the other; test: as it falls.\n")
    print(report(records))
    if args.out and not args.records:
        Path(args.out).write_text(json.dumps({"machine": machine(), "records": records}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
