"""Which learning levers help on markets and periods the agent never saw? Walk-forward screening.

A thin driver over ``nexlify.evaluation.walkforward``. For each lever configuration (``LEVERS``:
TrainingConfig overrides, or ``pool``: one policy per fold and seed trained on every market) it plans
the walk-forward of the markets with ``plan_jobs`` (one set of fold windows in the period every market
covers, so fold k is the same calendar window everywhere and no pooled policy trains on bars from after
any market's validation or test window), keeps the budget's last folds, and runs them with
``run_walkforward(..., ensemble=...)``: each job keeps the model that scored best on its fold's
validation window and backtests it, and the fold's seed ensemble, on the **validation** window (the
selection criterion) and on the **test** window after it (reported only, never used for choosing).

Run from the repository root (the lead's 16-core machine; no GPU needed)::

    PYTHONPATH=src python benchmarks/learning_levers.py --jobs 16
    PYTHONPATH=src python benchmarks/learning_levers.py --smoke --jobs 2      # a few minutes on 2 cores

Prints one table per lever (validation mean Sharpe and excess Sharpe over buy-and-hold; test win
rates against buy-and-hold and the MA rule, mean excess Sharpe with the verdict's t CI, drawdowns,
trades per month) and the walk-forward's verdict sentence, and writes every (lever, market, fold,
seed or ensemble) record to ``OUT/learning_levers.json``; each lever's models and fold outcomes stay
in ``OUT/<lever>/`` (a rerun reads finished jobs back instead of training them again).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

SHARED_DATA = Path("/work/shared/data")
MARKETS = ("BTCUSDT_1h", "BNBUSDT_1h", "LTCUSDT_1h", "XRPUSDT_1h")

# The hardware plan's learning settings on the 2-core Xeon VM (`nexlify profile --json`): large model,
# batch 256, a learning step every 32 transitions, 32 parallel envs.
PLAN_SETTINGS: dict[str, Any] = {"model_size": "large", "batch_size": 256, "train_frequency": 32,
                                 "target_update_interval": 62, "parallel_envs": 32, "buffer_size": 250_000}
# The default base of the later rounds: what `nexlify walkforward` trains by default on a 2-core CPU,
# with the default switching penalty; its levers add one setting each.
DEFAULT_BASE: dict[str, Any] = {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.004}
# What `nexlify walkforward` trains by default since session 11: the default base with its reward.
DSR_BASE: dict[str, Any] = {**DEFAULT_BASE, "reward_mode": "differential_sharpe"}
DSR_KNOBS: dict[str, tuple[str, Any]] = {"dsr_penalty_002": ("trade_penalty", 0.002),
                                           "dsr_penalty_008": ("trade_penalty", 0.008),
                                           "dsr_eta_003": ("dsr_eta", 0.003), "dsr_eta_03": ("dsr_eta", 0.03),
                                           "dsr_eta_001": ("dsr_eta", 0.001),
                                           "dsr_trend": ("feature_set", "trend"), "dsr_gamma997": ("gamma", 0.997),
                                           "dsr_nstep3": ("n_step", 3), "dsr_lr_half": ("learning_rate", 2.5e-4),
                                           "dsr_ep4": ("episodes", 4),
                                           "dsr_target": ("action_mode", "target"),
                                           "dsr_half": ("action_mode", "target_half"),
                                           # Session 17: the options that lost or were level under
                                           # log_return, never measured on this reward's base.
                                           "dsr_dueling": ("dueling", True), "dsr_qr": ("n_quantiles", 32),
                                           "dsr_per": ("prioritized_replay", True),
                                           "dsr_wd": ("weight_decay", 0.01), "dsr_dropout10": ("dropout", 0.1),
                                           "dsr_random": ("episode_bars", 720), "dsr_mirror": ("augment", "mirror")}
# Each lever: TrainingConfig overrides applied over the budget's settings. "pool": one policy per
# (fold, seed) trained on every market's training window of the fold end to end, chosen on all their
# validation windows joined, and tested on each market (same episodes: same passes over each market).
# With "episode_bars" (random windows) the episode count grows so the transitions stay the same.
LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "trend": {"feature_set": "trend"},
    "weight_decay": {"weight_decay": 0.01},
    "nstep3": {"n_step": 3},
    "dueling": {"dueling": True},
    "per": {"prioritized_replay": True},
    "pooled": {"pool": True},
    "pooled_trend": {"pool": True, "feature_set": "trend"},
    # The CPU planner's batch question at the default replay ratio (16 gradient samples per transition)
    # and target refresh spacing (2,000 transitions): the plan's 256 against 1024 (about 2x faster on a CPU).
    "pooled_b256": {"pool": True, "batch_size": 256, "train_frequency": 16, "target_update_interval": 125},
    "pooled_b1024": {"pool": True, "batch_size": 1024, "train_frequency": 64, "target_update_interval": 31},
    # What `nexlify walkforward` trains by default on a 2-core CPU (PLAN_SETTINGS), then its parts apart.
    "pooled_plan": {"pool": True, **PLAN_SETTINGS},
    "pooled_large": {"pool": True, "model_size": "large"},
    "pooled_envs32": {"pool": True, "parallel_envs": 32},
    # Bigger batches at the same learning steps (a step every 4 transitions: replay ratios 64 and 256).
    "pooled_b256_f4": {"pool": True, "batch_size": 256},
    "pooled_b1024_f4": {"pool": True, "batch_size": 1024},
    # The algorithm's options and the run length, on the pooled agent.
    "pooled_nstep3": {"pool": True, "n_step": 3},
    "pooled_dueling": {"pool": True, "dueling": True},
    "pooled_per": {"pool": True, "prioritized_replay": True},
    "pooled_wd": {"pool": True, "weight_decay": 0.01},
    "pooled_plan_dueling": {"pool": True, **PLAN_SETTINGS, "dueling": True},
    "pooled_envs32_dueling": {"pool": True, "parallel_envs": 32, "dueling": True},
    "pooled_penalty": {"pool": True, "trade_penalty": 0.001},
    "pooled_plan_penalty": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.001},
    # The penalty's size, and the other options on top of it (paired against pooled_penalty).
    "pooled_penalty_half": {"pool": True, "trade_penalty": 0.0005},
    "pooled_penalty_double": {"pool": True, "trade_penalty": 0.002},
    "pooled_penalty_wd": {"pool": True, "trade_penalty": 0.001, "weight_decay": 0.01},
    "pooled_penalty_dueling": {"pool": True, "trade_penalty": 0.001, "dueling": True},
    "pooled_penalty_trend": {"pool": True, "trade_penalty": 0.001, "feature_set": "trend"},
    "pooled_penalty_target": {"pool": True, "trade_penalty": 0.001, "action_mode": "target"},
    "pooled_penalty_ep16": {"pool": True, "trade_penalty": 0.001, "episodes": 16},
    "pooled_penalty_mirror": {"pool": True, "trade_penalty": 0.001, "augment": "mirror"},
    "pooled_penalty_tiny": {"pool": True, "trade_penalty": 0.001, "model_size": "tiny"},
    "pooled_penalty_lr_half": {"pool": True, "trade_penalty": 0.001, "learning_rate": 2.5e-4},
    "pooled_penalty_gamma95": {"pool": True, "trade_penalty": 0.001, "gamma": 0.95},
    "pooled_penalty_qr": {"pool": True, "trade_penalty": 0.001, "n_quantiles": 32},
    "pooled_plan_penalty_small": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.001, "model_size": "small"},
    "pooled_plan_penalty_tiny": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.001, "model_size": "tiny"},
    "pooled_plan_penalty_qr": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.001, "n_quantiles": 32},
    "pooled_plan_penalty_dueling": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.001, "dueling": True},
    # The penalty's size on the plan's settings (0.001 was picked on the screen's small batches).
    "pooled_plan_penalty_double": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.002},
    "pooled_plan_penalty_quadruple": {**DEFAULT_BASE},
    "pooled_plan_penalty_8x": {"pool": True, **PLAN_SETTINGS, "trade_penalty": 0.008},
    "pooled_penalty_quadruple": {"pool": True, "trade_penalty": 0.004},
    # Bigger batches at the plan's replay ratio 8 with the default penalty: what the CPU plan would set
    # if it timed them (train_frequency batch / 8, the target refreshed every ~2,000 transitions, one
    # vector step per learning step, 16-64 envs). Fewer, larger steps are the only route to 10x SB3 here.
    # A longer horizon (about two weeks of hourly bars against four days): holding through noise is
    # worth more, and the trend moves the agent sat out on test are weeks long.
    "pooled_plan_penalty_quadruple_gamma997": {**DEFAULT_BASE, "gamma": 0.997},
    "pooled_plan_penalty_quadruple_b512": {**DEFAULT_BASE, "batch_size": 512,
                                           "train_frequency": 64, "target_update_interval": 31, "parallel_envs": 64},
    "pooled_plan_penalty_quadruple_b1024": {**DEFAULT_BASE, "batch_size": 1024, "train_frequency": 128,
                                            "target_update_interval": 16, "parallel_envs": 64},
    # The issue's first levers, never measured on the default base: random episode windows (parallel
    # accounts no longer march through the same bars in step) and the trend and regime features.
    "pooled_plan_penalty_quadruple_random": {**DEFAULT_BASE, "episode_bars": 720},
    "pooled_plan_penalty_quadruple_trend": {**DEFAULT_BASE, "feature_set": "trend"},
    # Two more runs of it (seeds 3-5, 6-8): the feature set whose out-of-sample information the signal
    # probe measured highest (benchmarks/signal_probe.py), judged against the default's nine seeds.
    "pooled_plan_penalty_quadruple_trend_seeds345": {**DEFAULT_BASE, "feature_set": "trend", "first_seed": 3},
    "pooled_plan_penalty_quadruple_trend_seeds678": {**DEFAULT_BASE, "feature_set": "trend", "first_seed": 6},
    # Dropout in the learning forward pass (acting and targets use the whole network).
    "pooled_plan_penalty_quadruple_dropout10": {**DEFAULT_BASE, "dropout": 0.1},
    "pooled_plan_penalty_quadruple_dropout30": {**DEFAULT_BASE, "dropout": 0.3},
    # Twice the training history per fold (what `nexlify walkforward` trains on by default: 365 days).
    "pooled_plan_penalty_quadruple_train365": {**DEFAULT_BASE, "train_days": 365},
    "pooled_plan_penalty_quadruple_volscaled": {**DEFAULT_BASE, "reward_mode": "vol_scaled"},
    "pooled_plan_penalty_quadruple_nstep3": {**DEFAULT_BASE, "n_step": 3},
    "pooled_plan_penalty_quadruple_dueling": {**DEFAULT_BASE, "dueling": True},
    "pooled_plan_penalty_quadruple_qr": {**DEFAULT_BASE, "n_quantiles": 32},
    "pooled_plan_penalty_quadruple_eps01": {**DEFAULT_BASE, "epsilon_end": 0.01},
    "pooled_plan_penalty_quadruple_risk1": {**DEFAULT_BASE, "risk_aversion": 1.0},
    "pooled_plan_penalty_quadruple_risk3": {**DEFAULT_BASE, "risk_aversion": 3.0},
    # The differential Sharpe ratio as the reward (Moody & Saffell): defined since the first screen, never reported.
    # Since session 11 its switching penalty is charged to the return the Sharpe is taken of; a folder
    # trained before that holds the old reward's jobs (rerun it in a new --out).
    "pooled_plan_penalty_quadruple_dsr": {**DEFAULT_BASE, "reward_mode": "differential_sharpe"},
    "pooled_plan_penalty_quadruple_dsr_seeds345": {**DEFAULT_BASE, "reward_mode": "differential_sharpe",
                                                   "first_seed": 3},
    "pooled_plan_penalty_quadruple_dsr_seeds678": {**DEFAULT_BASE, "reward_mode": "differential_sharpe",
                                                   "first_seed": 6},
    # The reference retrained by the current code in its own folder: whether stored reference jobs
    # still stand for what today's code trains.
    "pooled_plan_penalty_quadruple_dsr_retrained": {**DSR_BASE},
    # The differential Sharpe reward's own knobs (session 12): the switching penalty, chosen under
    # log_return, at half and twice its size, and the rate of the Sharpe's moving moments (0.01: about
    # 100 bars) at a tenth, a third and three times it; and the trend features, level under log_return,
    # on the new reward, whose seeds disagree a third as much; and a longer horizon, 3-step returns and
    # half the learning rate, all level under log_return; and half the passes over the training
    # window (4 episodes instead of 8). Each against the three dsr runs above.
    **{name: {**DSR_BASE, key: value} for name, (key, value) in DSR_KNOBS.items()},
    **{f"{name}_seeds{first}{first + 1}{first + 2}": {**DSR_BASE, key: value, "first_seed": first}
       for name, (key, value) in DSR_KNOBS.items() for first in (3, 6)},
    # The default base again with other seeds (3, 4, 5): how far the reference's own training luck
    # moves the paired lenses, the yardstick for every lever paired against it.
    "pooled_plan_penalty_quadruple_seeds345": {**DEFAULT_BASE, "first_seed": 3},
    # The default base again, same seeds, in its own folder: retrained by the current code when the
    # reference's stored jobs predate a change to training (an old folder's jobs are reused as they are).
    "pooled_plan_penalty_quadruple_retrained": {**DEFAULT_BASE},
    "pooled_plan_penalty_quadruple_seeds678": {**DEFAULT_BASE, "first_seed": 6},
    # Each training market also played in reverse (no drift to learn a stance from), on the default base.
    "pooled_plan_penalty_quadruple_mirror": {**DEFAULT_BASE, "augment": "mirror"},
    "pooled_plan_penalty_quadruple_mirror_seeds345": {**DEFAULT_BASE, "augment": "mirror", "first_seed": 3},
    "pooled_plan_penalty_quadruple_mirror_seeds678": {**DEFAULT_BASE, "augment": "mirror", "first_seed": 6},
    "pooled_plan_penalty_quadruple_gamma997_seeds345": {**DEFAULT_BASE, "gamma": 0.997, "first_seed": 3},
    "pooled_plan_penalty_quadruple_gamma997_retrained": {**DEFAULT_BASE, "gamma": 0.997},
    # Slower learning, two ways: half the learning rate, and the target network refreshed every 250
    # learning steps (~8,000 transitions) instead of 62 (~2,000). Both damp how far one pass over the
    # training path moves the policy; the agent's out-of-sample position is mostly one macro bet per
    # window (docs/benchmarks.md, session 8), which slower learning may make less a matter of luck.
    # Batch 1024 (the route to 10x SB3 on a 2-core CPU), two more runs to set against the default's
    # nine seeds: seeds 3-5, and seeds 0-2 retrained by the current code.
    "pooled_plan_penalty_quadruple_b1024_seeds345": {**DEFAULT_BASE, "batch_size": 1024, "train_frequency": 128,
                                                     "target_update_interval": 16, "parallel_envs": 64,
                                                     "first_seed": 3},
    "pooled_plan_penalty_quadruple_b1024_retrained": {**DEFAULT_BASE, "batch_size": 1024, "train_frequency": 128,
                                                      "target_update_interval": 16, "parallel_envs": 64},
    "pooled_plan_penalty_quadruple_lr_half": {**DEFAULT_BASE, "learning_rate": 2.5e-4},
    "pooled_plan_penalty_quadruple_target250": {**DEFAULT_BASE, "target_update_interval": 250},
    "pooled_plan_penalty_quadruple_lr_half_seeds345": {**DEFAULT_BASE, "learning_rate": 2.5e-4, "first_seed": 3},
    # (seeds 0-2 of it were trained by the current code already: a retrained run would repeat them)
    "pooled_plan_penalty_quadruple_lr_half_seeds678": {**DEFAULT_BASE, "learning_rate": 2.5e-4, "first_seed": 6},
    "pooled_dsr": {"pool": True, "reward_mode": "differential_sharpe"},
    "pooled_ep4": {"pool": True, "episodes": 4},
    "pooled_ep16": {"pool": True, "episodes": 16},
    "pooled_train365": {"pool": True, "train_days": 365},
    "random_windows": {"episode_bars": 720},
    "target": {"action_mode": "target"},
    "target_penalty": {"action_mode": "target", "trade_penalty": 0.001},
}
# What every lever is measured against: TrainingConfig's defaults as they were when the levers were
# screened (no switching penalty, the log-return reward; the defaults now are 0.004 and the
# differential Sharpe, see `pooled_plan_penalty_quadruple` and `pooled_plan_penalty_quadruple_dsr`),
# so the rows stay reproducible. (A folder screened before the reward was pinned here holds jobs
# without it and is refused: screen into a new --out.)
# Every validated model is kept, so a run's snapshots can be ensembled or re-chosen afterwards.
SCREEN_BASE: dict[str, Any] = {"trade_penalty": 0.0, "reward_mode": "log_return", "keep_validated_models": True}
# Lever keys that shape the walk-forward's jobs and windows rather than the TrainingConfig.
WINDOW_KEYS = ("pool", "train_days", "first_seed")
DEFAULT_LEVERS = ("baseline", "trend", "pooled", "random_windows", "target")
SMOKE_LEVERS = DEFAULT_LEVERS


@dataclass(frozen=True)
class Budget:
    """Window lengths (days), folds (the plan's last ones), seeds and training per job."""

    folds: int
    seeds: int
    train_days: int
    validation_days: int
    test_days: int
    episodes: int
    validations: int  # checks of the validation window per run (eval_interval = episodes / this)
    parallel_envs: int


BUDGETS: dict[str, Budget] = {
    # All seven folds of the four shared markets' common period: 4 markets x 7 folds x 3 seeds = 84
    # jobs per lever (21 pooled ones on all four markets). Every screen since the seven-fold round used it.
    "standard": Budget(folds=7, seeds=3, train_days=180, validation_days=60, test_days=90, episodes=8,
                       validations=4, parallel_envs=4),
    "smoke": Budget(folds=1, seeds=2, train_days=45, validation_days=15, test_days=15, episodes=2,
                    validations=2, parallel_envs=2),
}


# --------------------------------------------------------------------------- plan
def lever_overrides(lever: str, budget: Budget, markets: int = 1) -> dict[str, Any]:
    """The whole TrainingConfig of ``lever`` as overrides: the budget's run length, then the lever's
    settings, every other key at its default.

    With random windows (``episode_bars``) the episode count grows so each account sees as many
    transitions as a full pass would give: a pooled job's full pass walks ``markets`` training
    windows joined end to end.
    """
    overrides = {k: v for k, v in LEVERS[lever].items() if k not in WINDOW_KEYS}
    episodes = overrides.pop("episodes", budget.episodes)
    if overrides.get("episode_bars"):
        full_pass = markets * LEVERS[lever].get("train_days", budget.train_days) * 24 - 1
        episodes = max(1, round(episodes * full_pass / overrides["episode_bars"]))
    from nexlify.config import TrainingConfig

    sparse = {"episodes": episodes, "eval_interval": max(1, episodes // budget.validations),
              "save_interval": episodes, "parallel_envs": budget.parallel_envs, "num_workers": 1, **SCREEN_BASE,
              **overrides}
    # Every key resolved, so each job stores the whole configuration it trained with: a later change
    # of a TrainingConfig default cannot silently give an old folder's jobs a new meaning (they are
    # refused as different jobs instead).
    return TrainingConfig().with_overrides(sparse).to_dict()


def lever_jobs(lever: str, paths: list[str], budget: Budget, out_dir: str | Path) -> list[Any]:
    """The walk-forward jobs of ``lever`` in ``OUT/<lever>``: the plan's last ``budget.folds`` folds.

    The test windows lie back to back up to the end of the period every market covers, so the last
    folds are the same calendar windows for every lever, whatever its feature warm-up.
    """
    from nexlify.errors import DataError
    from nexlify.evaluation.walkforward import plan_jobs

    pooled = bool(LEVERS[lever].get("pool"))
    overrides = lever_overrides(lever, budget, len(paths) if pooled else 1)
    first_seed = LEVERS[lever].get("first_seed", 0)
    jobs = plan_jobs(paths, Path(out_dir) / lever, overrides, list(range(first_seed, first_seed + budget.seeds)),
                     test_days=budget.test_days, train_days=LEVERS[lever].get("train_days", budget.train_days),
                     validation_days=budget.validation_days, pool=pooled, common_period=True)
    folds = sorted({job.fold for job in jobs})
    if len(folds) < budget.folds:
        raise DataError(f"the markets' common period holds {len(folds)} fold(s) of {budget.train_days} training, "
                        f"{budget.validation_days} validation and {budget.test_days} test days, fewer than "
                        f"{budget.folds}; use fewer --folds or longer histories")
    kept = set(folds[-budget.folds:])
    return [job for job in jobs if job.fold in kept]


# --------------------------------------------------------------------------- run
def train_all(jobs: list[Any], processes: int, started: float) -> None:
    """Train every unfinished job of every lever in one process pool, pooled (longest) jobs first, so no
    lever's last few jobs leave cores idle; each lever's ``run_walkforward`` then reads them back."""
    from nexlify.evaluation.walkforward import finished_outcome, local_executor

    pending = sorted((job for job in jobs if finished_outcome(job) is None), key=lambda job: -len(job.members))
    for done, _ in enumerate(local_executor(processes)(pending), 1):
        if done % max(1, len(pending) // 10) == 0 or done == len(pending):
            print(f"[{time.perf_counter() - started:6.1f} s] {done}/{len(pending)} training jobs", flush=True)


def run_lever(jobs: list[Any], ensemble: str, model_choice: str = "best") -> Any:
    """The walk-forward of one lever's jobs, judged by the folds' seed ensembles (a WalkforwardResult).

    Its jobs are trained already (``train_all``): this reads their outcomes back and builds the ensembles.
    """
    from nexlify.evaluation.walkforward import local_executor, run_walkforward

    return run_walkforward(jobs, local_executor(1), ensemble=ensemble, model_choice=model_choice)


def judge_all(jobs: dict[str, list[Any]], processes: int, ensemble: str, model_choice: str = "best") -> dict[str, Any]:
    """``run_lever`` for every lever, levers side by side in ``processes`` processes (ensembles backtest
    every fold's validation and test windows, seconds each)."""
    if processes <= 1 or len(jobs) <= 1:
        return {lever: run_lever(planned, ensemble, model_choice) for lever, planned in jobs.items()}
    with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {lever: pool.submit(run_lever, planned, ensemble, model_choice) for lever, planned in jobs.items()}
        return {lever: future.result() for lever, future in futures.items()}


# --------------------------------------------------------------------------- summary
def summarize(views: list[dict[str, Any]]) -> dict[str, Any]:
    """Validation and test figures of one group of market outcomes (one lever's seeds, or ensembles)."""
    from nexlify.evaluation.verdict import cluster_t_interval, trades_per_month

    def sharpe(view: dict, part: str, name: str) -> float:
        return view[part][name]["sharpe"]

    val_excess = np.array([sharpe(v, "validation_backtest", "agent") - sharpe(v, "validation_backtest", "buy_and_hold")
                           for v in views])
    test_excess = np.array([sharpe(v, "test", "agent") - sharpe(v, "test", "buy_and_hold") for v in views])
    # The interval's units are (market, fold): seeds of one fold share its market path; and the
    # markets of one calendar window move together, so each window's units count as one observation.
    units: dict[tuple, list[float]] = {}
    for view, excess in zip(views, test_excess, strict=True):
        units.setdefault((view["job"]["market"], view["job"]["fold"], view["job"]["test_start"]), []).append(
            float(excess))
    agent, bh = ([v["test"][name] for v in views] for name in ("agent", "buy_and_hold"))
    exposure = np.array([a["exposure"] for a in agent])
    validation_trend = np.array([v["validation_backtest"]["buy_and_hold"]["total_return"] for v in views])
    return {
        "n": len(views),
        "validation_sharpe": float(np.mean([sharpe(v, "validation_backtest", "agent") for v in views])),
        "validation_excess_sharpe": float(val_excess.mean()),
        "test_win_vs_bh": float(np.mean(test_excess > 0)),
        "test_win_vs_ma": float(np.mean([sharpe(v, "test", "agent") > sharpe(v, "test", "ma_crossover")
                                         for v in views])),
        "test_excess_sharpe": float(test_excess.mean()),
        "test_excess_ci": cluster_t_interval((np.mean(u) for u in units.values()),
                                             clusters=(key[2] for key in units)),
        "test_dd_at_most_bh": float(np.mean([a["max_drawdown"] <= b["max_drawdown"] for a, b in zip(agent, bh,
                                                                                                    strict=True)])),
        "test_dd_agent": float(np.mean([a["max_drawdown"] for a in agent])),
        "test_dd_bh": float(np.mean([b["max_drawdown"] for b in bh])),
        "trades_per_month": float(np.mean([trades_per_month(v["test"]["agent"], v["periods_per_year"])
                                           for v in views])),
        "test_exposure": float(exposure.mean()),
        # How far the test position is the validation window's trend carried on by the model choice
        # (docs/benchmarks.md, "What the agent does out of sample"): a lever that learns timing of its
        # own should lower it.
        "exposure_follows_validation": correlation(exposure, validation_trend),
    }


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of ``a`` and ``b``; nan when either is constant or shorter than 2."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def group_name(view: dict[str, Any]) -> str:
    ensemble = view["job"].get("ensemble")
    return f"ensemble_{ensemble}" if ensemble else "seeds"


def report(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The printed tables and the summary numbers, per lever: seeds, then ensembles, then per market."""
    summaries: dict[str, Any] = {}
    blocks = []
    for lever, result in results.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for view in result.outcomes:
            groups.setdefault(group_name(view), []).append(view)
        for view in groups["seeds"]:
            groups.setdefault(f"seeds {view['job']['market']}", []).append(view)
        summaries[lever] = {name: summarize(views) for name, views in groups.items()}
        rows = []
        for name, s in summaries[lever].items():
            low, high = s["test_excess_ci"]
            ci = "n/a" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"
            rows.append([name, s["n"], f"{s['validation_sharpe']:+.2f}", f"{s['validation_excess_sharpe']:+.2f}",
                         f"{s['test_win_vs_bh']:.0%}", f"{s['test_win_vs_ma']:.0%}",
                         f"{s['test_excess_sharpe']:+.2f} {ci}",
                         f"{s['test_dd_at_most_bh']:.0%}", f"{s['test_dd_agent']:.1%} / {s['test_dd_bh']:.1%}",
                         f"{s['trades_per_month']:.1f}", f"{s['test_exposure']:.0%}",
                         f"{s['exposure_follows_validation']:+.2f}"])
        headers = ["group", "n", "val Sharpe", "val excess", "test win B&H", "test win MA",
                   "test excess Sharpe [95% CI]", "DD<=B&H", "DD agent/B&H", "trades/mo", "test long",
                   "corr(long, val B&H)"]
        blocks.append(f"== {lever}: {LEVERS[lever] or 'defaults'}\n{table(headers, rows)}\n"
                      f"verdict: {result.verdict}")
    return "\n\n".join(blocks), summaries


def validation_excess_by_window(result: Any, ensembles: bool) -> dict[tuple[str, str], float]:
    """Validation excess Sharpe over buy-and-hold per (market, validation window): the fold's ensemble,
    or the mean of its seeds. Keyed by the window's dates, so levers with other fold numbers still pair."""
    per_window: dict[tuple[str, str], list[float]] = {}
    for view in result.outcomes:
        if bool(view["job"].get("ensemble")) != ensembles:
            continue
        backtest = view["validation_backtest"]
        key = (view["job"]["market"], str(view["job"]["validation_start"]))
        per_window.setdefault(key, []).append(backtest["agent"]["sharpe"] - backtest["buy_and_hold"]["sharpe"])
    return {key: float(np.mean(values)) for key, values in per_window.items()}


def last_checkpoint_by_window(result: Any) -> dict[tuple[str, str], float]:
    """See ``checkpoints_by_window``: the **last** validated checkpoint's score."""
    return checkpoints_by_window(result, lambda scores: scores[-1])


def every_checkpoint_by_window(result: Any) -> dict[tuple[str, str], float]:
    """See ``checkpoints_by_window``: the mean score of **every** validated checkpoint of a run, as
    free of the choice as the last one and, over several checkpoints, less at the mercy of where the
    run happened to stop (the stored jobs: the best checkpoint's score is 0.6-1.2 Sharpe above this
    mean, a bonus that differs from lever to lever)."""
    return checkpoints_by_window(result, lambda scores: float(np.mean(scores)))


def checkpoints_by_window(result: Any, pick: Callable[[list[float]], float]) -> dict[tuple[str, str], float]:
    """A validation score of each run picked from its validated checkpoints' scores, averaged over the
    seeds, per validation window (a market's, or all markets' joined for pooled runs: one per run).

    The reported validation figures are those of the checkpoint that scored best on that same window,
    so they carry a selection bonus, larger for levers whose checkpoints differ more; a score picked
    without looking at the others was never chosen on, so it compares levers without that bonus. Seeds share
    their window's market path, so the window, not the run, is the unit resampled."""
    runs: dict[tuple[str, str], dict[int, float]] = {}
    for view in result.outcomes:
        history = (view.get("validation") or {}).get("history")
        if view["job"].get("ensemble") or not history:
            continue
        job = view["job"]
        window = ("pooled" if job.get("pooled") else job["market"], str(job["validation_start"]))
        runs.setdefault(window, {})[job["seed"]] = pick([entry["score"] for entry in history])
    return {window: float(np.mean(list(seeds.values()))) for window, seeds in runs.items()}


LENSES = (("seeds", lambda result: validation_excess_by_window(result, False)),
          ("ensemble", lambda result: validation_excess_by_window(result, True)),
          ("last checkpoint", last_checkpoint_by_window),
          ("every checkpoint", every_checkpoint_by_window))


def held_out_best_by_window(folder: Path, processes: int) -> dict[tuple[str, str], float]:
    """The chosen-model lens without its choice bonus: each fold's ensemble of its seeds' best
    snapshots, chosen on one half of the validation window and scored (excess Sharpe over buy-and-hold)
    on the other, both ways round (``benchmarks/model_choice.py``'s `best` nested), per (market,
    validation window). The seeds and ensemble lenses score the choice on the window it was made on,
    which flatters levers whose snapshots differ more."""
    from model_choice import fold_groups, fold_study

    groups = fold_groups(folder)
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        studied = list(pool.map(fold_study, groups))
    values = {}
    for members, fold_records in zip(groups, studied, strict=True):
        window = str(members[0].windows.validation_start)
        for record in fold_records:
            nested = record["nested"]["best"]
            values[(record["market"], window)] = (nested["first_to_second"] + nested["second_to_first"]) / 2
    return values


HELD_OUT_LENS = "best, held-out halves"


def lens_values(results: dict[str, Any], held_out: dict[str, dict[tuple[str, str], float]] | None
                ) -> dict[str, dict[str, dict[tuple[str, str], float]]]:
    """Every lens's per-window values of every lever: ``LENSES`` from the results, and the held-out
    lens where ``held_out`` gives it (``held_out_best_by_window`` per lever)."""
    values = {lever: {name: measure(result) for name, measure in LENSES} for lever, result in results.items()}
    for lever, windows in (held_out or {}).items():
        values[lever][HELD_OUT_LENS] = windows
    return values


def reference_lenses(values: dict[str, dict[str, dict[tuple[str, str], float]]], references: list[str]
                     ) -> dict[str, dict[tuple[str, str], float]]:
    """Each lens's per-window values of the reference (``values``: ``lens_values`` of the levers): one
    run's, or the mean of several runs' (the same configuration with other seeds) on the windows they
    all have, which halves the reference's own training luck that every lever paired against it
    shares."""
    lenses = {}
    for name in values[references[0]]:
        runs = [values[reference][name] for reference in references]
        shared = set.intersection(*(set(run) for run in runs))
        lenses[name] = {key: float(np.mean([run[key] for run in runs])) for key in shared}
    return lenses


def paired_against(results: dict[str, Any], reference: str | list[str],
                   held_out: dict[str, dict[tuple[str, str], float]] | None = None) -> tuple[str, dict[str, Any]]:
    """Each lever minus ``reference`` on the same validation windows, four ways: the validation excess
    Sharpe of the chosen models (seeds' mean, and the ensemble) per (market, window), and the last
    checkpoint's and every checkpoint's mean validation score (seeds' mean) per window. Mean
    difference with a bootstrap interval, and how often the lever was better. Pairing removes the
    windows' shared luck, the largest part of the spread. Two intervals: the cluster bootstrap, and
    the t interval over the windows (``cluster_t_interval``), the one to trust with few windows.
    ``reference`` may name several runs of one configuration (other seeds): the lever is then paired
    against their mean per window (``reference_lenses``). With ``held_out`` (every lever's
    ``held_out_best_by_window``) a fifth lens pairs the choice made on held-out halves."""
    from nexlify.evaluation.verdict import bootstrap_mean_ci, cluster_t_interval

    references = [reference] if isinstance(reference, str) else list(reference)
    label = "+".join(references)
    rows, out = [], {}
    values = lens_values(results, held_out)
    baseline = reference_lenses(values, references)
    for lever in results:
        if lever in references:
            continue
        out[lever] = {}
        cells: list[Any] = [lever]
        for name, theirs in baseline.items():
            mine = values[lever][name]
            shared = sorted(set(mine) & set(theirs))
            diffs = [mine[k] - theirs[k] for k in shared]
            if not diffs:
                cells += ["n/a", "n/a"]
                continue
            windows = [window for _, window in shared]  # the markets of a window move together
            low, high = bootstrap_mean_ci(diffs, clusters=windows)
            t_low, t_high = cluster_t_interval(diffs, windows)
            better = sum(d > 0 for d in diffs)
            out[lever][name] = {"n": len(diffs), "mean": float(np.mean(diffs)), "ci": [low, high],
                                "t_ci": [t_low, t_high], "better": better}
            cells += [f"{np.mean(diffs):+.2f} [{low:+.2f}, {high:+.2f}] t [{t_low:+.2f}, {t_high:+.2f}]",
                      f"{better}/{len(diffs)}"]
        rows.append(cells)
    headers = ["lever", "seeds: val excess diff [bootstrap] t [t interval]", "better",
               "ensemble: val excess diff [bootstrap] t [t interval]", "better",
               "last checkpoint: val Sharpe diff [bootstrap] t [t interval]", "better",
               "every checkpoint: val Sharpe diff [bootstrap] t [t interval]", "better"]
    if held_out:
        headers += [f"{HELD_OUT_LENS}: val excess diff [bootstrap] t [t interval]", "better"]
    return f"== paired against {label} on validation (lever minus {label})\n{table(headers, rows)}", out


def fold_windows(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each lever's fold windows, one row per (market, fold)."""
    return {lever: [{"market": row["market"], "fold": row["fold"], "windows": row["windows"]} for row in result.folds]
            for lever, result in results.items()}


def records(lever: str, result: Any) -> list[dict[str, Any]]:
    """One JSON record per (market, fold, seed or ensemble) of ``lever``; equity curves stay in OUT/<lever>."""
    return [{"lever": lever, **{key: value for key, value in view.items() if key != "equity"}}
            for view in result.outcomes]


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    from nexlify.evaluation.defaults import DEFAULT_ENSEMBLE, DEFAULT_MODEL_CHOICE, ENSEMBLE_MODES
    from nexlify.evaluation.snapshots import MODEL_CHOICES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=[str(SHARED_DATA / f"{m}.csv") for m in MARKETS],
                        help="market files (default: the four shared markets)")
    parser.add_argument("--levers", default=None,
                        help=f"comma-separated subset of {', '.join(LEVERS)} (default: {', '.join(DEFAULT_LEVERS)})")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard")
    parser.add_argument("--smoke", action="store_true", help=f"--budget smoke with levers {','.join(SMOKE_LEVERS)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per fold (default: the budget's)")
    parser.add_argument("--folds", type=int, default=None, help="the plan's last N folds (default: the budget's)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per job (default: the budget's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--ensemble", choices=ENSEMBLE_MODES, default=DEFAULT_ENSEMBLE)
    parser.add_argument("--model-choice", choices=MODEL_CHOICES, default=DEFAULT_MODEL_CHOICE,
                        help="which validated models of each seed the fold ensembles combine")
    parser.add_argument("--reference", default=None, help="lever the others are paired against on validation "
                        "(default: the first of --levers); several, comma-separated (one configuration with "
                        "other seeds), are averaged per window")
    parser.add_argument("--held-out", action="store_true", help="also pair each fold's best-model ensemble "
                        "chosen on one half of validation and scored on the other (benchmarks/model_choice.py): "
                        "the chosen-model lens without the choice bonus; reads the stored snapshots back")
    parser.add_argument("--out", default="runs/learning_levers", help="folder for models and the JSON")
    args = parser.parse_args(argv)

    from nexlify.errors import NexlifyError
    from nexlify.evaluation.report import write_results_json
    from nexlify.evaluation.walkforward import market_name

    budget = BUDGETS["smoke" if args.smoke else args.budget]
    changes = {k: v for k, v in (("seeds", args.seeds), ("folds", args.folds), ("episodes", args.episodes))
               if v is not None}
    budget = replace(budget, **changes)
    levers = args.levers.split(",") if args.levers else list(SMOKE_LEVERS if args.smoke else DEFAULT_LEVERS)
    unknown = [lever for lever in levers if lever not in LEVERS]
    references = args.reference.split(",") if args.reference else levers[:1]
    unknown += [f"{name} (--reference must be one of --levers)" for name in references if name not in levers]
    missing = [p for p in args.data if not Path(p).is_file()]
    if unknown or missing or min(budget.seeds, budget.folds, budget.episodes, args.jobs) < 1:
        problem = (f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}" if unknown else
                   f"data file(s) not found: {', '.join(missing)}" if missing else
                   "--seeds, --folds, --episodes and --jobs must be positive")
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out_dir = Path(args.out).resolve()
    started = time.perf_counter()
    try:
        jobs = {lever: lever_jobs(lever, args.data, budget, out_dir) for lever in levers}
        everything = [job for planned in jobs.values() for job in planned]
        print(f"{len(everything)} training jobs on {args.jobs} process(es); {machine()}")
        print(f"budget: {asdict(budget)}", flush=True)
        train_all(everything, args.jobs, started)
        results = judge_all(jobs, args.jobs, args.ensemble, args.model_choice)
        held_out = ({lever: held_out_best_by_window(out_dir / lever, args.jobs) for lever in levers}
                    if args.held_out else None)
    except NexlifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    text, summaries = report(results)
    print()
    print(text)
    paired_text, paired = paired_against(results, references, held_out)
    print()
    print(paired_text)
    seconds = [v["train_seconds"] for result in results.values() for v in result.outcomes if "train_seconds" in v]
    print(f"\nwall time {wall:.0f} s on {args.jobs} process(es); training per job mean {np.mean(seconds):.1f} s, "
          f"max {np.max(seconds):.1f} s")
    payload = {"machine": machine(), "budget": asdict(budget), "ensemble": args.ensemble,
               "model_choice": args.model_choice,
               "levers": {k: LEVERS[k] for k in levers}, "markets": [market_name(p) for p in args.data],
               "wall_seconds": wall, "processes": args.jobs, "summaries": summaries,
               "paired": {"reference": "+".join(references), "levers": paired},
               "verdicts": {lever: result.overall for lever, result in results.items()},
               "folds": fold_windows(results),
               "records": [record for lever, result in results.items() for record in records(lever, result)]}
    write_results_json(out_dir / "learning_levers.json", payload)  # strict JSON, written atomically
    print(f"wrote {out_dir / 'learning_levers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
