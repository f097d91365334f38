"""Which learning levers help on markets and periods the agent never saw? Walk-forward screening.

For each lever configuration (``LEVERS``: TrainingConfig overrides, or pooled multi-market training)
this trains one agent per (market, fold, seed) on the fold's training window, keeps the model that
scored best on the fold's validation window, and backtests it, and the seeds' ensemble, on the
validation window (the selection criterion) and on the test window after it (reported only, never
used for choosing). Jobs run in parallel processes with one torch thread each.

Run from the repository root (the lead's 16-core machine; no GPU needed)::

    PYTHONPATH=src python benchmarks/learning_levers.py --jobs 16
    PYTHONPATH=src python benchmarks/learning_levers.py --smoke --jobs 2      # ~1 min on 2 cores

Prints one table per configuration (validation mean Sharpe and excess Sharpe over buy-and-hold;
test win rates against buy-and-hold and the MA rule, mean excess Sharpe with a bootstrap CI,
drawdowns, trades per month) and writes every (config, market, fold, seed) record to
``OUT/learning_levers.json``. ``--budget standard`` (default) is sized to finish in <= 8 minutes on
16 cores with the default configurations (measured per job, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

SHARED_DATA = Path("/work/shared/data")
MARKETS = ("BTCUSDT_1h", "BNBUSDT_1h", "LTCUSDT_1h", "XRPUSDT_1h")
BOOTSTRAP_SAMPLES = 2000
HOURS_PER_MONTH = 730.0  # 8760 / 12

# Each lever: TrainingConfig overrides applied over the budget's settings. "pool": one policy per
# (fold, seed) trained on every market's training window of the fold, chosen on all their validation
# windows joined, and evaluated on each market's own windows (same episodes: same passes over each).
# With "episode_bars" (random windows) the episode count grows so the transitions stay the same.
LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "trend": {"feature_set": "trend"},
    "weight_decay": {"weight_decay": 0.01},
    "nstep3": {"n_step": 3},
    "dueling": {"dueling": True},
    "per": {"prioritized_replay": True},
    "pooled": {"pool": True},
    "random_windows": {"episode_bars": 720},
    "target": {"action_mode": "target"},
    "target_penalty": {"action_mode": "target", "trade_penalty": 0.001},
}
DEFAULT_LEVERS = ("baseline", "trend", "pooled", "random_windows", "target")
SMOKE_LEVERS = DEFAULT_LEVERS


@dataclass(frozen=True)
class Budget:
    """Window lengths (days), folds, seeds and training per job."""

    folds: int
    seeds: int
    train_days: int
    validation_days: int
    test_days: int
    episodes: int
    validations: int  # checks of the validation window per run (eval_interval = episodes / this)
    parallel_envs: int


BUDGETS: dict[str, Budget] = {
    # 4 markets x 3 folds x 3 seeds = 36 jobs per configuration, ~22 CPU-seconds each (2-core VM).
    "standard": Budget(folds=3, seeds=3, train_days=180, validation_days=60, test_days=90, episodes=8,
                       validations=4, parallel_envs=4),
    "smoke": Budget(folds=1, seeds=2, train_days=45, validation_days=15, test_days=15, episodes=2,
                    validations=2, parallel_envs=2),
}


# --------------------------------------------------------------------------- data and folds
@lru_cache(maxsize=8)
def load_market(path: str) -> Any:
    """The validated candles of one market file (cached per process)."""
    from nexlify.data.market import load_ohlcv

    return load_ohlcv(path, max_gap_bars=None, log_gaps=False)


@lru_cache(maxsize=16)
def market_features(path: str, feature_set: str) -> np.ndarray:
    """Unscaled features of the whole file: causal, so each fold may slice them (cached per process)."""
    from nexlify.data.features import compute_market_features

    return compute_market_features(load_market(path), feature_set)


def fold_rows(n_rows: int, fold: int, budget: Budget, bars_per_day: int = 24) -> tuple[int, int, int, int]:
    """Row bounds (train_start, validation_start, test_start, test_end) of ``fold`` (1-based).

    Test windows lie back to back at the end of the history (fold ``budget.folds`` is the last);
    each fold's validation window ends where its test starts and its training window where its
    validation starts, so no fold tests on rows it trained or chose its model on.
    """
    test, validation, train = (d * bars_per_day for d in (budget.test_days, budget.validation_days,
                                                           budget.train_days))
    test_end = n_rows - (budget.folds - fold) * test
    test_start = test_end - test
    validation_start = test_start - validation
    train_start = validation_start - train
    return train_start, validation_start, test_start, test_end


def fold_splits(paths: tuple[str, ...], fold: int, budget: Budget, feature_set: str) -> dict[str, Any]:
    """Each market's MarketSplits for ``fold``, scaled by one scaler fitted on the training rows of
    all ``paths`` together (one market: its own training rows only)."""
    from nexlify.data.features import FeatureScaler, feature_names, warmup_bars
    from nexlify.data.market import MarketSlice, MarketSplits, detect_timeframe, periods_per_year
    from nexlify.errors import DataError

    bounds = {}
    for path in paths:
        bounds[path] = fold_rows(len(load_market(path)), fold, budget)
        if bounds[path][0] < warmup_bars(feature_set):
            raise DataError(f"{path}: fold {fold} starts before the {warmup_bars(feature_set)} warm-up candles; "
                            "use fewer folds or shorter windows")
    train_rows = np.concatenate([market_features(p, feature_set)[b[0]:b[1]] for p, b in bounds.items()])
    scaler = FeatureScaler(feature_names=feature_names(feature_set)).fit(train_rows)

    def part(path: str, start: int, end: int) -> MarketSlice:
        rows = load_market(path).iloc[start:end]
        return MarketSlice(rows.index.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy(),
                           *(rows[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")),
                           scaler.transform(market_features(path, feature_set)[start:end]))

    splits = {}
    for path, b in bounds.items():
        timeframe = detect_timeframe(load_market(path))
        splits[path] = MarketSplits(part(path, b[0], b[1]), part(path, b[1], b[2]), part(path, b[2], b[3]),
                                    scaler, timeframe, periods_per_year(timeframe), source=Path(path).name)
    return splits


def pooled_splits(splits: list[Any]) -> Any:
    """Several markets' splits joined end to end (``join_markets``): one training and one validation path."""
    from nexlify.data.market import join_markets

    first = splits[0]
    return replace(first, train=join_markets([s.train for s in splits]),
                   validation=join_markets([s.validation for s in splits]),
                   test=join_markets([s.test for s in splits]), source="+".join(s.source for s in splits))


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One trained agent: a lever on one market (or all, pooled) for one fold and seed."""

    lever: str
    markets: tuple[str, ...]  # file paths; several when pooled
    fold: int
    seed: int
    budget: Budget
    out_dir: str

    @property
    def folder(self) -> Path:
        where = "pooled" if len(self.markets) > 1 else market_name(self.markets[0])
        return Path(self.out_dir) / self.lever / where / f"fold_{self.fold}" / f"seed_{self.seed}"


def market_name(path: str) -> str:
    return Path(path).name.split(".")[0]


def job_config(job: Job) -> Any:
    """The TrainingConfig of ``job``: defaults, the budget's run length, then the lever's overrides."""
    from nexlify.config import TrainingConfig

    budget = job.budget
    overrides = {k: v for k, v in LEVERS[job.lever].items() if k != "pool"}
    episodes = budget.episodes
    if overrides.get("episode_bars"):
        episodes = max(1, round(episodes * (budget.train_days * 24 - 1) / overrides["episode_bars"]))
    return TrainingConfig().with_overrides({
        "episodes": episodes, "eval_interval": max(1, episodes // budget.validations),
        "save_interval": episodes, "parallel_envs": budget.parallel_envs, "num_workers": 1,
        "data_days": None, "seed": job.seed, **overrides,
    })


def backtests(policy_agent: Any, splits: Any, config: Any, part: str) -> dict[str, dict[str, float]]:
    """Metrics of the agent (a model or an ensemble policy), buy-and-hold, MA rule and cash on one window."""
    from nexlify.evaluation.backtest import agent_policy, run_baselines, run_policy

    market = getattr(splits, part)
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    policy = policy_agent if callable(policy_agent) else agent_policy(policy_agent)
    results = {"agent": run_policy(market, policy, "agent", splits.periods_per_year, **costs)}
    baselines = run_baselines(market, splits.periods_per_year, random_seeds=1, **costs)
    results.update({name: baselines[name] for name in ("buy_and_hold", "ma_crossover", "cash")})
    return {name: result.metrics for name, result in results.items()}


def run_job(job: Job) -> list[dict[str, Any]]:
    """Train, select on validation, backtest on validation and test: one record per market."""
    import torch

    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.training.trainer import BEST_MODEL, Trainer

    torch.set_num_threads(1)
    started = time.perf_counter()
    config = job_config(job)
    markets = fold_splits(job.markets, job.fold, job.budget, config.feature_set)
    torch.manual_seed(job.seed)
    trainer = Trainer(config, pooled_splits(list(markets.values())), job.folder)
    state = trainer.train()
    best = AdaptiveDQNAgent.from_checkpoint(job.folder / BEST_MODEL)
    seconds = time.perf_counter() - started
    parts = ("train", "validation", "test")
    return [{
        "lever": job.lever, "market": market_name(path), "fold": job.fold, "seed": job.seed,
        "best_episode": state.best_episode, "transitions": state.transitions, "seconds": seconds,
        "rows": {p: len(getattr(splits, p)) for p in parts},
        "windows": {p: [str(getattr(splits, p).timestamps[0]), str(getattr(splits, p).timestamps[-1])] for p in parts},
        "validation": backtests(best, splits, config, "validation"),
        "test": backtests(best, splits, config, "test"),
    } for path, splits in markets.items()]


def run_ensemble(lever: str, path: str, paths: tuple[str, ...], fold: int, budget: Budget, out_dir: str,
                 mode: str = "mean_q") -> dict[str, Any]:
    """The seeds' best models of (lever, market, fold) acting as one ensemble policy (``paths``: every
    market of the run, which a pooled lever trained on together)."""
    import torch

    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.training.trainer import BEST_MODEL

    torch.set_num_threads(1)
    trained_on = paths if LEVERS[lever].get("pool") else (path,)
    jobs = [Job(lever, trained_on, fold, seed, budget, out_dir) for seed in range(budget.seeds)]
    agents = [AdaptiveDQNAgent.from_checkpoint(j.folder / BEST_MODEL) for j in jobs]
    config = job_config(jobs[0])
    splits = fold_splits(trained_on, fold, budget, config.feature_set)[path]
    policy = ensemble_policy(agents, mode)
    return {"lever": lever, "market": market_name(path), "fold": fold, "seed": f"ensemble_{mode}",
            "validation": backtests(policy, splits, config, "validation"),
            "test": backtests(policy, splits, config, "test")}


def plan(levers: list[str], paths: list[str], budget: Budget, out_dir: str) -> list[Job]:
    """Every training job, fold by fold; a pooled lever has one job per (fold, seed) for all markets."""
    def groups(lever: str) -> list[tuple[str, ...]]:
        return [tuple(paths)] if LEVERS[lever].get("pool") else [(path,) for path in paths]

    return [Job(lever, markets, fold, seed, budget, out_dir) for lever in levers
            for fold in range(1, budget.folds + 1) for seed in range(budget.seeds) for markets in groups(lever)]


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def run_all(jobs: list[Job], n_procs: int, ensembles: list[tuple]) -> list[dict[str, Any]]:
    """Every job, then every ensemble, on ``n_procs`` processes (in this process when 1)."""
    records: list[dict[str, Any]] = []
    started = time.perf_counter()

    def note(done: int, total: int, what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {done}/{total} {what}", flush=True)

    if n_procs <= 1:
        for i, job in enumerate(jobs, 1):
            records.extend(run_job(job))
            note(i, len(jobs), "training jobs")
        for i, args in enumerate(ensembles, 1):
            records.append(run_ensemble(*args))
            note(i, len(ensembles), "ensembles")
        return records
    with ProcessPoolExecutor(max_workers=n_procs, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        # Longest first (pooled jobs train on every market), so no process is left with a long tail.
        ordered = sorted(jobs, key=lambda j: -len(j.markets))
        for i, future in enumerate(as_completed([pool.submit(run_job, j) for j in ordered]), 1):
            records.extend(future.result())
            if i % max(1, len(jobs) // 10) == 0 or i == len(jobs):
                note(i, len(jobs), "training jobs")
        for future in as_completed([pool.submit(run_ensemble, *args) for args in ensembles]):
            records.append(future.result())
        note(len(ensembles), len(ensembles), "ensembles")
    return records


# --------------------------------------------------------------------------- summary
def bootstrap_ci(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values``."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Validation and test figures of one group of records (one lever; seeds or ensembles)."""
    def sharpe(r: dict, part: str, name: str) -> float:
        return r[part][name]["sharpe"]

    val_excess = np.array([sharpe(r, "validation", "agent") - sharpe(r, "validation", "buy_and_hold")
                           for r in records])
    test_excess = np.array([sharpe(r, "test", "agent") - sharpe(r, "test", "buy_and_hold") for r in records])
    # The bootstrap resamples (market, fold) units: seeds of one fold share its market path.
    units: dict[tuple, list[float]] = {}
    for r, excess in zip(records, test_excess, strict=True):
        units.setdefault((r["market"], r["fold"]), []).append(float(excess))
    unit_means = np.array([np.mean(v) for v in units.values()])
    months = np.array([r["test"]["agent"]["steps"] / HOURS_PER_MONTH for r in records])
    return {
        "n": len(records),
        "validation_sharpe": float(np.mean([sharpe(r, "validation", "agent") for r in records])),
        "validation_excess_sharpe": float(val_excess.mean()),
        "test_win_vs_bh": float(np.mean(test_excess > 0)),
        "test_win_vs_ma": float(np.mean([sharpe(r, "test", "agent") > sharpe(r, "test", "ma_crossover")
                                         for r in records])),
        "test_excess_sharpe": float(test_excess.mean()),
        "test_excess_ci": bootstrap_ci(unit_means),
        "test_dd_at_most_bh": float(np.mean([r["test"]["agent"]["max_drawdown"]
                                             <= r["test"]["buy_and_hold"]["max_drawdown"] for r in records])),
        "test_dd_agent": float(np.mean([r["test"]["agent"]["max_drawdown"] for r in records])),
        "test_dd_bh": float(np.mean([r["test"]["buy_and_hold"]["max_drawdown"] for r in records])),
        "trades_per_month": float(np.mean([r["test"]["agent"]["trades"] for r in records] / months)),
    }


def report(records: list[dict[str, Any]], levers: list[str]) -> tuple[str, dict[str, Any]]:
    """The printed tables and the summary numbers, per lever: seeds, then ensembles, then per market."""
    summaries: dict[str, Any] = {}
    blocks = []
    for lever in levers:
        mine = [r for r in records if r["lever"] == lever]
        groups = {"seeds": [r for r in mine if isinstance(r["seed"], int)]}
        for kind in sorted({r["seed"] for r in mine if isinstance(r["seed"], str)}):
            groups[kind] = [r for r in mine if r["seed"] == kind]
        for market in sorted({r["market"] for r in groups["seeds"]}):
            groups[f"seeds {market}"] = [r for r in groups["seeds"] if r["market"] == market]
        summaries[lever] = {name: summarize(rows) for name, rows in groups.items() if rows}
        rows = []
        for name, s in summaries[lever].items():
            low, high = s["test_excess_ci"]
            ci = "n/a" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"
            rows.append([name, s["n"], f"{s['validation_sharpe']:+.2f}", f"{s['validation_excess_sharpe']:+.2f}",
                         f"{s['test_win_vs_bh']:.0%}", f"{s['test_win_vs_ma']:.0%}",
                         f"{s['test_excess_sharpe']:+.2f} {ci}",
                         f"{s['test_dd_at_most_bh']:.0%}", f"{s['test_dd_agent']:.1%} / {s['test_dd_bh']:.1%}",
                         f"{s['trades_per_month']:.1f}"])
        headers = ["group", "n", "val Sharpe", "val excess", "test win B&H", "test win MA",
                   "test excess Sharpe [95% CI]", "DD<=B&H", "DD agent/B&H", "trades/mo"]
        blocks.append(f"== {lever}: {LEVERS[lever] or 'defaults'}\n{table(headers, rows)}")
    return "\n\n".join(blocks), summaries


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=[str(SHARED_DATA / f"{m}.csv") for m in MARKETS],
                        help="market files (default: the four shared markets)")
    parser.add_argument("--levers", default=None,
                        help=f"comma-separated subset of {', '.join(LEVERS)} (default: {', '.join(DEFAULT_LEVERS)})")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard")
    parser.add_argument("--smoke", action="store_true", help=f"--budget smoke with levers {','.join(SMOKE_LEVERS)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per fold (default: the budget's)")
    parser.add_argument("--folds", type=int, default=None, help="folds per market (default: the budget's)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per job (default: the budget's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--ensemble", choices=("mean_q", "vote"), default="mean_q")
    parser.add_argument("--out", default="runs/learning_levers", help="folder for models and the JSON")
    args = parser.parse_args(argv)

    budget = BUDGETS["smoke" if args.smoke else args.budget]
    changes = {k: v for k, v in (("seeds", args.seeds), ("folds", args.folds), ("episodes", args.episodes))
               if v is not None}
    budget = replace(budget, **changes)
    default = SMOKE_LEVERS if args.smoke else DEFAULT_LEVERS
    levers = args.levers.split(",") if args.levers else list(default)
    unknown = [lever for lever in levers if lever not in LEVERS]
    bad_budget = min(budget.seeds, budget.folds, budget.episodes) < 1
    missing = [p for p in args.data if not Path(p).is_file()]
    if unknown or bad_budget or missing or args.jobs < 1:
        problem = (f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}" if unknown else
                   f"data file(s) not found: {', '.join(missing)}" if missing else
                   "--seeds, --folds, --episodes and --jobs must be positive")
        print(f"error: {problem}", file=sys.stderr)
        return 2
    paths = [str(Path(p).resolve()) for p in args.data]
    out_dir = str(Path(args.out).resolve())
    jobs = plan(levers, paths, budget, out_dir)
    ensembles = [(lever, path, tuple(paths), fold, budget, out_dir, args.ensemble) for lever in levers
                 for path in paths for fold in range(1, budget.folds + 1)] if budget.seeds > 1 else []
    print(f"{len(jobs)} training jobs + {len(ensembles)} ensembles on {args.jobs} process(es); {machine()}")
    print(f"budget: {asdict(budget)}", flush=True)
    started = time.perf_counter()
    records = run_all(jobs, args.jobs, ensembles)
    wall = time.perf_counter() - started
    text, summaries = report(records, levers)
    print()
    print(text)
    job_seconds = [r["seconds"] for r in records if "seconds" in r]
    print(f"\nwall time {wall:.0f} s on {args.jobs} process(es); training job mean {np.mean(job_seconds):.1f} s, "
          f"max {np.max(job_seconds):.1f} s")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "budget": asdict(budget), "levers": {k: LEVERS[k] for k in levers},
               "markets": [market_name(p) for p in paths], "wall_seconds": wall, "processes": args.jobs,
               "summaries": summaries, "records": records}
    (Path(out_dir) / "learning_levers.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    print(f"wrote {Path(out_dir) / 'learning_levers.json'}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
