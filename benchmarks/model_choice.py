"""The model choice judged without its bonus: each rule chosen on one half of a validation window and
scored on the other half, against buy-and-hold, on a lever screen's stored runs.

Choosing the validated snapshot that scored best on a validation window and then scoring the choice
on that same window flatters it (the "choice bonus", docs/benchmarks.md). Here each rule of
``nexlify.evaluation.snapshots`` picks its snapshots on one half of every validation window and is
scored on the other half (both ways round: first half to second, second to first), so rules that
choose and rules that do not (``last``, ``all``) are compared on data none of them chose on. The test
windows are scored too, each rule choosing on the whole validation window as a walk-forward would;
report them as they fall, never choose on them.

Reads finished runs trained with ``keep_validated_models``: a lever's folder of the lever screen
(which keeps the snapshots) or a ``nexlify walkforward --model-choice all`` checkpoint folder;
nothing is trained:

    PYTHONPATH=src python benchmarks/learning_levers.py --levers L1,L2 --folds 7 --seeds 3 --out runs/screen
    PYTHONPATH=src python benchmarks/model_choice.py runs/screen/L1 runs/screen/L2

Several folders that are one configuration with other seeds (a reference's runs) are also pooled:
each window's value is the mean over the runs. Two configurations are paired with ``--reference``
(the reference's folder names; the other folders are the lever), here or later from ``--out``'s file:

    PYTHONPATH=src python benchmarks/model_choice.py runs/ref_a runs/ref_b runs/lever_a runs/lever_b \
        --reference ref_a,ref_b --out records.json
    PYTHONPATH=src python benchmarks/model_choice.py --records records.json --reference ref_a,ref_b

A configuration that validates less often than its reference is judged against the reference's
snapshots at the same points in training (more candidates help the ``best`` rule by themselves,
docs/benchmarks.md): ``--keep-episodes 2,4,6`` studies only those snapshots (records named
``ref_a[2,4,6]``), and ``--records`` joins several files:

    PYTHONPATH=src python benchmarks/model_choice.py runs/ref_a --keep-episodes 2,4,6 --out ref_even.json
    PYTHONPATH=src python benchmarks/model_choice.py --records ref_even.json lever.json --reference "ref_a[2,4,6]"

Snapshot ensembles and single episodes come from the same runs: with ``--keep-episodes 5,6`` the rule
``all`` is each seed's last two snapshots in one ensemble. ``--versus last`` pairs every lever rule
with the reference's ``last``, and ``--lever`` picks the lever's runs (default: all the others), so one
seed set is paired with its own runs:

    PYTHONPATH=src python benchmarks/model_choice.py --records ref.json tail.json --reference ref_a \
        --lever "ref_a[5,6]" --versus last

A name holding ``*`` in ``--reference`` or ``--lever`` stands for every run it matches, so a lever is
judged against all the stored default sets (``benchmarks/records/``) without listing them:

    PYTHONPATH=src python benchmarks/model_choice.py --records benchmarks/records/*.json \
        --reference "wf_def*" --lever wf_ee10_45
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from fnmatch import fnmatchcase
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.evaluation.defaults import DEFAULT_MODEL_CHOICE  # noqa: E402
from nexlify.evaluation.snapshots import MODEL_CHOICES as RULES  # noqa: E402

HALVES = ("first", "second")


def half(market: Any, which: str) -> Any:
    """The first or second half of a MarketSlice's rows (the second gets the odd row)."""
    middle = len(market) // 2
    rows = slice(0, middle) if which == "first" else slice(middle, len(market))
    return replace(market, **{f.name: getattr(market, f.name)[rows] for f in fields(market)})


def other(which: str) -> str:
    return HALVES[1 - HALVES.index(which)]


def fold_groups(folder: Path) -> list[list[Any]]:
    """The finished jobs under ``folder``, one list of seed jobs per (market or pool, fold)."""
    from nexlify.evaluation.walkforward import OUTCOME_FILE, FoldJob

    groups: dict[Path, list[Any]] = {}
    for path in sorted(folder.glob(f"*/fold_*/seed_*/{OUTCOME_FILE}")):
        job = FoldJob.from_dict(json.loads(path.read_text())["job"])
        groups.setdefault(path.parent.parent, []).append(replace(job, output_dir=str(path.parent)))
    return list(groups.values())


def kept_history(job: Any, keep: frozenset[float] | None) -> list[dict[str, Any]]:
    """A finished job's validation records, only those at the episodes in ``keep`` (None: all)."""
    from nexlify.evaluation.walkforward import finished_outcome

    history = finished_outcome(job)["validation"]["history"]
    return [r for r in history if keep is None or float(r["episode"]) in keep]


FoldModels = tuple[list[Any], dict[str, float], list[Any], dict[Any, Any], dict[str, Any]]


def load_fold(members: list[Any], keep: frozenset[float] | None = None) -> FoldModels:
    """One fold's seed jobs read back: (the jobs by seed, the backtests' costs, each seed's snapshots
    (only those at the episodes in ``keep``; None: all), their agents by file, each market's splits)."""
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.fold_markets import market_splits
    from nexlify.evaluation.snapshots import run_snapshots

    members = sorted(members, key=lambda job: job.seed)
    config = TrainingConfig().with_overrides({**members[0].config_overrides, "data_days": None})
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    runs = [run_snapshots(job.output_dir, kept_history(job, keep)) for job in members]
    agents = {s.path: AdaptiveDQNAgent.from_checkpoint(s.path, device="cpu") for run in runs for s in run}
    return members, costs, runs, agents, market_splits(members[0], config.feature_set)


def fold_study(members: list[Any], keep: frozenset[float] | None = None) -> list[dict[str, Any]]:
    """Every rule's scores on one fold: nested (choose on one validation half, score the other) and
    on test (choose on the whole validation window, the trainer's scores). One record per market.
    ``keep``: study only the snapshots taken at these episodes (None: all)."""
    from nexlify.evaluation.backtest import buy_and_hold_policy, moving_average_policy, run_policy
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.evaluation.snapshots import Snapshot, choose

    members, costs, runs, agents, markets = load_fold(members, keep)

    def backtest(snapshots: list[Snapshot], window: Any, ppy: float) -> dict[str, float]:
        result = run_policy(window, ensemble_policy([agents[s.path] for s in snapshots]), "agent", ppy, **costs)
        return {"sharpe": float(result.metrics["sharpe"]), "long": float(result.position.mean()),
                "max_drawdown": float(result.metrics["max_drawdown"])}

    windows = {name: {"first": half(s.validation, "first"), "second": half(s.validation, "second"),
                      "test": s.test} for name, s in markets.items()}
    ppy = {name: s.periods_per_year for name, s in markets.items()}
    # Each snapshot alone on each half of every market's validation window: the scores a rule chooses by
    # (the mean over markets, as the pooled trainer scores the markets' windows together).
    alone = {(s.path, which): np.mean([backtest([s], windows[m][which], ppy[m])["sharpe"] for m in markets])
             for run in runs for s in run for which in HALVES}
    records = []
    for name in markets:
        holding = {which: run_policy(windows[name][which], buy_and_hold_policy, "buy_and_hold", ppy[name],
                                     **costs).metrics for which in (*HALVES, "test")}
        hold = {which: metrics["sharpe"] for which, metrics in holding.items()}
        test_window = windows[name]["test"]
        ma_test = run_policy(test_window, moving_average_policy(test_window.close), "ma_crossover", ppy[name],
                             **costs).metrics
        # The test baselines #15's goals compare with (drawdown against holding's, Sharpe against the MA rule's).
        record = {"market": name, "fold": members[0].fold, "seeds": [job.seed for job in members],
                  "nested": {}, "test": {}, "test_long": {}, "test_drawdown": {},
                  "hold_test_drawdown": float(holding["test"]["max_drawdown"]),
                  "ma_test_excess": float(ma_test["sharpe"]) - hold["test"]}
        for rule in RULES:
            scores = []
            for chosen_on in HALVES:
                rescored = [[replace(s, score=alone[(s.path, chosen_on)]) for s in run] for run in runs]
                scored_on = other(chosen_on)
                sharpe = backtest(choose(rescored, rule), windows[name][scored_on], ppy[name])["sharpe"]
                scores.append(sharpe - hold[scored_on])
            record["nested"][rule] = {"first_to_second": scores[0], "second_to_first": scores[1]}
            outcome = backtest(choose(runs, rule), windows[name]["test"], ppy[name])
            record["test"][rule] = outcome["sharpe"] - hold["test"]
            record["test_long"][rule] = outcome["long"]
            record["test_drawdown"][rule] = outcome["max_drawdown"]
        records.append(record)
    return records


def window_values(records: list[dict[str, Any]], rule: str, lens: str) -> dict[tuple[str, int], float]:
    """Per (market, fold) window: ``nested`` (both directions' mean), ``forward`` (first half chosen,
    second scored) or ``test``; averaged over the runs (levers) that share the window."""
    values: dict[tuple[str, int], list[float]] = {}
    for record in records:
        if lens == "test":
            value = record["test"][rule]
        else:
            nested = record["nested"][rule]
            value = (nested["first_to_second"] if lens == "forward"
                     else (nested["first_to_second"] + nested["second_to_first"]) / 2)
        values.setdefault((record["market"], record["fold"]), []).append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def paired_stats(mine: dict[tuple[str, int], float],
                 base: dict[tuple[str, int], float]) -> tuple[float, float, float, int, int]:
    """``mine`` minus ``base`` over the windows both have: (mean, t interval low and high over folds (a
    fold's markets share its calendar window), windows better, windows)."""
    from nexlify.evaluation.verdict import cluster_t_interval

    keys = sorted(set(mine) & set(base))
    diff = [mine[k] - base[k] for k in keys]
    low, high = cluster_t_interval(diff, [k[1] for k in keys])
    return float(np.mean(diff)), low, high, sum(d > 0 for d in diff), len(diff)


def difference(mine: dict[tuple[str, int], float], base: dict[tuple[str, int], float]) -> str:
    """``mine`` minus ``base``: mean, t interval over folds, windows better (``paired_stats``)."""
    mean, low, high, better, count = paired_stats(mine, base)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] {better}/{count}"


def compare(records: list[dict[str, Any]], label: str) -> str:
    """Each rule's mean excess Sharpe per lens, and each rule minus ``best`` paired by window."""
    rows = []
    for rule in RULES:
        row: list[object] = [label, rule]
        for lens in ("nested", "forward", "test"):
            mine = window_values(records, rule, lens)
            row.append(f"{np.mean(list(mine.values())):+.2f}")
            if rule != "best":
                row.append(difference(mine, window_values(records, "best", lens)))
            else:
                row.append("")
        test = window_values(records, rule, "test")
        row.append(f"{sum(v > 0 for v in test.values())}/{len(test)}")
        longs = [r["test_long"][rule] for r in records]
        row.append(f"{np.mean(longs):.0%}")
        rows.append(row)
    return table(["runs", "rule", "nested", "minus best", "forward", "minus best", "test (as it falls)",
                  "minus best", "test > B&H", "test long"], rows)


def goals(records: list[dict[str, Any]], rule: str) -> str | None:
    """#15's four goals for ``rule`` on test, as it fell (one run's windows): above buy-and-hold, the
    mean excess Sharpe and its t interval over folds, drawdown at most holding's, above the MA rule's
    Sharpe. None for records studied before the drawdowns were kept."""
    from nexlify.evaluation.verdict import cluster_t_interval

    if not records or "test_drawdown" not in records[0]:
        return None
    excess = [r["test"][rule] for r in records]
    low, high = cluster_t_interval(excess, [r["fold"] for r in records])
    n = len(records)
    above = sum(e > 0 for e in excess)
    shallower = sum(r["test_drawdown"][rule] <= r["hold_test_drawdown"] for r in records)
    beats_ma = sum(r["test"][rule] > r["ma_test_excess"] for r in records)
    return (f"{rule}: above buy-and-hold {above}/{n} ({above / n:.0%}), mean excess {np.mean(excess):+.2f} "
            f"[{low:+.2f}, {high:+.2f}], drawdown at most holding's {shallower}/{n} ({shallower / n:.0%}), "
            f"above the MA rule {beats_ma}/{n}")


def goal_lines(records: dict[str, list[dict[str, Any]]]) -> list[str]:
    """#15's goals (``goals``) for the product's model choice, the one the walk-forward judges by
    default (``DEFAULT_MODEL_CHOICE``), one line per run."""
    return [f"{run} {line}" for run, rs in records.items() if (line := goals(rs, DEFAULT_MODEL_CHOICE))]


def paired(reference: list[dict[str, Any]], lever: list[dict[str, Any]], label: str,
           versus: str | None = None) -> str:
    """``lever`` minus ``reference`` for each rule, on each lens, paired by window (each side's value the
    mean over its runs), t interval over folds: two configurations judged with no choice bonus.
    ``versus``: every lever rule against this one reference rule instead of the same rule (e.g. a
    ``--keep-episodes 5,6`` study's ``all``, the last two snapshots' ensemble, against ``last``)."""
    rows = []
    for rule in RULES:
        row: list[object] = [label, rule if versus is None else f"{rule} - {versus}"]
        for lens in ("nested", "forward", "test"):
            row.append(difference(window_values(lever, rule, lens), window_values(reference, versus or rule, lens)))
        rows.append(row)
    return table(["lever minus reference", "rule", "nested", "forward", "test (as it falls)"], rows)


def run_names(text: str) -> list[str]:
    """Comma-separated run names; commas inside a name's brackets (``ref_a[2,4,6]``) are the name's own."""
    return [name.strip() for name in re.split(r",(?![^\[]*\])", text) if name.strip()]


def matching_runs(text: str, runs: list[str]) -> list[str]:
    """``run_names(text)`` with each name holding ``*`` replaced by the runs it matches, in ``runs``' order
    (``wf_def*``: every stored default set). A pattern matching nothing stays, so it is reported as unknown."""
    names: list[str] = []
    for name in run_names(text):
        # Brackets are part of run names (``ref_a[2,4,6]``), never a character class.
        pattern = name.replace("[", "[[]")
        found = [run for run in runs if fnmatchcase(run, pattern)] if "*" in name else []
        names += [run for run in found or [name] if run not in names]
    return names


def load_records(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The runs' records from earlier ``--out`` files, joined; ValueError if a run is in two files."""
    records: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        try:
            runs = json.loads(Path(path).read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read records from {path} ({exc.__class__.__name__}); give a file that "
                             "model_choice.py --out wrote") from None
        for name, rows in runs.items():
            if name in records:
                raise ValueError(f"run {name} is in more than one --records file; keep one")
            records[name] = rows
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="finished run folders (a lever's screen folder, a walk-forward's)")
    parser.add_argument("--jobs", type=int, default=2, help="folds studied at once")
    parser.add_argument("--out", default=None, help="JSON file for the records (default: none)")
    parser.add_argument("--together", action="store_true", help="the folders' seeds of each fold as one run (e.g. "
                        "three runs of 3 seeds as one of 9), studied beside each folder on its own")
    parser.add_argument("--records", nargs="+", default=None,
                        help="records earlier --out runs wrote (several files are joined), instead of studying runs")
    parser.add_argument("--keep-episodes", default=None, help="comma-separated episodes: study only the snapshots "
                        "validated there (e.g. 2,4,6), to judge against a lever that validates less often")
    parser.add_argument("--reference", default=None, help="comma-separated run (folder) names pooled as the "
                        "reference (a name with * matches runs: 'wf_def*'): the other runs, pooled, are printed "
                        "minus it, paired by window")
    parser.add_argument("--lever", default=None, help="with --reference: comma-separated run names pooled as "
                        "the lever (default: every run not in --reference), e.g. one seed set's pair")
    parser.add_argument("--versus", default=None, choices=RULES, help="with --reference: every lever rule "
                        "minus this reference rule (default: the same rule)")
    args = parser.parse_args(argv)
    if (args.lever or args.versus) and not args.reference:  # before the study, which takes minutes
        print("error: --lever and --versus pair runs against --reference; name the reference runs with it",
              file=sys.stderr)
        return 2
    if args.records:
        try:
            records = load_records(args.records)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return _report(records, args.reference, None, args.lever, args.versus)
    try:
        keep = frozenset(float(e) for e in args.keep_episodes.split(",")) if args.keep_episodes else None
    except ValueError:
        print(f"error: --keep-episodes takes comma-separated episodes, e.g. 2,4,6; got {args.keep_episodes!r}",
              file=sys.stderr)
        return 2
    if not args.runs:
        parser.error("give the run folders to study, or --records")
    folders = [Path(folder).name for folder in args.runs]
    unknown = set(matching_runs(args.reference, folders)) - set(folders) if args.reference else ()
    if unknown:  # before the study, which takes minutes
        print(f"error: --reference names no run given: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    suffix = f"[{args.keep_episodes}]" if keep is not None else ""
    by_lever = {Path(folder).name + suffix: fold_groups(Path(folder)) for folder in args.runs}
    if args.together:
        merged: dict[tuple[str, str], list[Any]] = {}
        for folds in by_lever.values():
            for members in folds:
                fold_dir = Path(members[0].output_dir).parent
                merged.setdefault((fold_dir.parent.name, fold_dir.name), []).extend(members)
        by_lever = {"together": list(merged.values()), **by_lever}
    empty = [name for name, folds in by_lever.items() if not folds]
    if empty:
        print(f"error: no finished jobs (*/fold_*/seed_*/fold_outcome.json) under {', '.join(empty)}", file=sys.stderr)
        return 2
    tasks = [(lever, members) for lever, folds in by_lever.items() for members in folds]
    bare = [job.output_dir for _, members in tasks for job in members if keep and not kept_history(job, keep)]
    if bare:  # before the study, which takes minutes
        print(f"error: no snapshot at episodes {args.keep_episodes} in {bare[0]} (and {len(bare) - 1} more); "
              "name episodes the runs validated", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(fold_study, [members for _, members in tasks], [keep] * len(tasks)))
    records = {lever: [] for lever in by_lever}
    for (lever, _), fold_records in zip(tasks, done, strict=True):
        records[lever].extend(fold_records)
    print(f"{machine()}; {len(tasks)} folds in {time.perf_counter() - started:.0f} s\n")
    return _report(records, args.reference, args.out, args.lever, args.versus)


def _report(records: dict[str, list[dict[str, Any]]], reference: str | None, out: str | None,
            lever: str | None = None, versus: str | None = None) -> int:
    if reference:  # the names are checked before anything is printed, so a typo gives one error line
        names = matching_runs(reference, list(records))
        others = (matching_runs(lever, list(records)) if lever
                  else [run for run in records if run not in names and run != "together"])
        for flag, given in (("--reference", names), ("--lever", others)):
            unknown = [name for name in given if name not in records]
            if unknown:
                print(f"error: {flag} names runs not studied: {', '.join(unknown)} "
                      f"(studied: {', '.join(records)})", file=sys.stderr)
                return 2
    print("Validation excess Sharpe over buy-and-hold, each rule chosen on one half of the window and scored on "
          "the other (nested: both ways round; forward: first half chosen, second scored); test: chosen on the "
          "whole validation window. 'minus best': paired by window, t interval over folds, windows better.\n")
    blocks = [compare(rs, lever) for lever, rs in records.items()]
    lines = goal_lines(records)
    if lines:
        blocks.append("#15's goals on test, as it fell (t over folds):\n" + "\n".join(lines))
    separate = [rs for lever, rs in records.items() if lever != "together"]
    if len(separate) > 1:
        blocks.append(compare([r for rs in separate for r in rs], "pooled"))
    if reference:
        blocks.append(paired([r for name in names for r in records[name]],
                             [r for run in others for r in records[run]], "+".join(others), versus))
    print("\n\n".join(blocks))
    if out:
        Path(out).write_text(json.dumps({"machine": machine(), "records": records}, indent=1))
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
