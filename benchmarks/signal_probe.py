"""How much the agent's market features say about the returns ahead: a ridge probe on the walk-forward's folds.

Every learning lever screened for issue 15 left the agent's macro stance to its seeds: Q(long) and
Q(flat) nearly tie. This asks the question under that: do the features the agent sees carry any
information about the next hour, day or week that a simple reader can use out of sample? If a ridge
regression fitted on a fold's training window cannot rank the returns of the validation window after
it, a DQN reading the same features has little to time the market with, and the gap to
buy-and-hold is not first a learning problem.

For each fold of the lever screen's plan (the same calendar windows as `learning_levers.py`), each
feature set and each horizon H (bars):

* the target is the H-bar log return ahead, ``log(close[t+H] / close[t])``: what an action at the
  close of bar t earns (before costs) if held H bars;
* a ridge regression is fitted on the training rows of all markets together (each market's features
  scaled by its own training rows, as the pooled default agent sees them);
* on the validation and test windows (and, as a control, the training window) it scores the rank
  correlation between prediction and outcome (the information coefficient, IC), per market;
* and it trades: long while the predicted H-bar return is above one fill's cost, flat once it is
  below minus that cost (held in between), through the product's backtester with the same fees and
  slippage as every baseline; its Sharpe is compared with buy-and-hold's on the same window.

``--reader quadratic`` adds every product of two features (interactions); ``--context`` puts
beside each market's features the other markets' mean at the same hour (what their moves add);
``--calendar`` adds the hour of day and day of week (intraday and weekday patterns).

Volatility, unlike direction, is known to persist, and Sharpe rewards cutting exposure when it is
high. So the same windows also score exposure rules on the trailing 24-bar volatility (each market's
thresholds from its own training window): flat above the training window's 80th percentile
(``vol_filter``), half exposure above its median (``vol_half``: what a flat/half/long agent could
do), and exposure scaled to the training median (``vol_scaled``, fractional). These are computed from
close-to-close returns with the fill cost charged on every change of exposure, not through the
backtester (whose accounts are all in or all out), against buy-and-hold computed the same way.

Intervals are t intervals over calendar windows (a fold's markets counted as one observation, as
the walk-forward verdict counts them). Validation is where conclusions are drawn; test is reported
as it falls. Nothing is trained but the ridge; about two and a half minutes on a 2-core VM for the screen's
seven folds (the bar-by-bar backtests), under a minute and a half for one market's whole history:

    PYTHONPATH=src python benchmarks/signal_probe.py --folds 7 --out runs/signal_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402
from learning_levers import BUDGETS, MARKETS, SHARED_DATA, lever_jobs  # noqa: E402

from nexlify.config import TrainingConfig  # noqa: E402
from nexlify.data.market import MarketSlice  # noqa: E402
from nexlify.env.actions import LONG, to_orders  # noqa: E402
from nexlify.errors import DataError  # noqa: E402
from nexlify.evaluation.backtest import Policy, buy_and_hold_policy, long_positions, run_policy  # noqa: E402
from nexlify.evaluation.fold_markets import market_splits  # noqa: E402
from nexlify.evaluation.metrics import sharpe_ratio  # noqa: E402
from nexlify.evaluation.verdict import cluster_t_interval  # noqa: E402

HORIZONS = (1, 6, 24, 168)
FEATURE_SETS = ("basic", "trend")
SPLITS = ("train", "validation", "test")
# The lever whose plan gives the windows: the default base (every lever's last folds are these windows).
WINDOW_LEVER = "pooled_plan_penalty_quadruple"
RIDGE_ALPHA = 1.0  # per training row, so the shrinkage does not fade as windows grow
# linear: the features as they are; quadratic: plus every product of two of them (squares included),
# a reader that sees interactions such as "a falling market in a calm regime".
READERS = ("linear", "quadratic")


def expand(features: np.ndarray, reader: str) -> np.ndarray:
    """The reader's inputs: the features, and for ``quadratic`` every product x_i * x_j with i <= j."""
    features = np.asarray(features, dtype=np.float64)
    if reader == "linear":
        return features
    first, second = np.triu_indices(features.shape[1])
    return np.concatenate([features, features[:, first] * features[:, second]], axis=1)


def forward_log_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """``log(close[t + horizon] / close[t])`` for every row t; NaN where t + horizon is past the end."""
    close = np.asarray(close, dtype=np.float64)
    ahead = np.full(len(close), np.nan)
    if horizon < len(close):
        ahead[:len(close) - horizon] = np.log(close[horizon:] / close[:-horizon])
    return ahead


def fit_ridge(features: np.ndarray, target: np.ndarray, alpha: float = RIDGE_ALPHA) -> tuple[np.ndarray, float]:
    """Ridge regression on rows with a finite target: (coefficients, intercept). ``alpha`` is per row."""
    keep = np.isfinite(target)
    x, y = np.asarray(features, dtype=np.float64)[keep], np.asarray(target, dtype=np.float64)[keep]
    x_mean, y_mean = x.mean(axis=0), y.mean()
    centred = x - x_mean
    gram = centred.T @ centred + alpha * len(x) * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, centred.T @ (y - y_mean))
    return coef, float(y_mean - x_mean @ coef)


def rank_ic(prediction: np.ndarray, outcome: np.ndarray) -> float:
    """Spearman rank correlation of prediction and outcome over rows where the outcome is known."""
    keep = np.isfinite(outcome)
    if keep.sum() < 3 or np.ptp(prediction[keep]) == 0.0:
        return 0.0
    ranks = pd.DataFrame({"prediction": prediction[keep], "outcome": outcome[keep]}).rank()
    return float(np.corrcoef(ranks["prediction"], ranks["outcome"])[0, 1])


def band_positions(prediction: np.ndarray, band: float) -> np.ndarray:
    """Wanted position per row: long once the prediction rises above ``band``, flat once it falls below
    ``-band``, unchanged in between (starting flat)."""
    wanted = np.zeros(len(prediction), dtype=np.int64)
    position = 0
    for t, value in enumerate(prediction):
        if value > band:
            position = 1
        elif value < -band:
            position = 0
        wanted[t] = position
    return wanted


def probe_policy(wanted: np.ndarray) -> Policy:
    """The orders that hold the position ``wanted[t]`` after bar t (a ``target`` agent's semantics)."""

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        return to_orders(np.full(len(obs), wanted[t]), long_positions(obs), "target", np.where)

    return policy


def with_context(slices: dict[str, MarketSlice]) -> dict[str, np.ndarray]:
    """Each market's features beside the mean of the other markets' features at the same hour (zeros
    where no other market has that hour). Causal: every feature at an hour is known at its close."""
    frames = {name: pd.DataFrame(market.features, index=market.timestamps) for name, market in slices.items()}
    joined = {}
    for name, market in slices.items():
        others = [frame for other, frame in frames.items() if other != name]
        if others:
            context = pd.concat(others).groupby(level=0).mean().reindex(market.timestamps).fillna(0.0).to_numpy()
        else:
            context = np.zeros_like(market.features)
        joined[name] = np.concatenate([market.features, context], axis=1)
    return joined


def calendar_columns(timestamps: np.ndarray) -> np.ndarray:
    """One-hot hour of day (24 columns) and day of week (7, Monday first) of each row's candle (UTC):
    any hourly or weekday pattern in the returns, which a linear reader can weigh hour by hour."""
    stamps = pd.DatetimeIndex(timestamps)
    hours = np.eye(24)[stamps.hour.to_numpy()]
    weekdays = np.eye(7)[stamps.day_of_week.to_numpy()]
    return np.concatenate([hours, weekdays], axis=1)


def probe_window(market: MarketSlice, inputs: np.ndarray, coef: np.ndarray, intercept: float, horizon: int,
                 band: float, periods_per_year: float, costs: dict[str, float], hold_sharpe: float) -> dict[str, Any]:
    """The probe's IC and trading on one window (``inputs``: the reader's inputs on its rows), beside
    buy-and-hold's Sharpe there (``hold_sharpe``, the same for every horizon)."""
    prediction = inputs @ coef + intercept
    wanted = band_positions(prediction, band)
    probe = run_policy(market, probe_policy(wanted), "probe", periods_per_year, **costs).metrics
    days = max(len(market) - 1, 1) / 24
    return {"ic": rank_ic(prediction, forward_log_returns(market.close, horizon)),
            "sharpe": probe["sharpe"], "buy_and_hold_sharpe": hold_sharpe,
            "excess_sharpe": probe["sharpe"] - hold_sharpe, "trades_per_month": probe["trades"] * 30 / days,
            "exposure": probe["exposure"], "long_share_wanted": float(np.mean(wanted == LONG))}


def probe_fold(job: Any, feature_set: str, horizons: tuple[int, ...], frictionless: bool = False,
               reader: str = "linear", context: bool = False, calendar: bool = False,
               alpha: float = RIDGE_ALPHA) -> list[dict[str, Any]]:
    """Every (horizon, market, split) record of one fold for one feature set; [] if the fold lacks warm-up.

    ``frictionless``: no fee or slippage for the probe and buy-and-hold alike, and no band (long
    whenever the prediction is positive): what the signal is worth before costs. ``context``: each
    market's features beside the other markets' mean at the same hour (``with_context``). ``calendar``:
    plus the hour of day and day of week (``calendar_columns``).
    """
    try:
        splits = market_splits(job, feature_set)
    except DataError:
        return []
    config = TrainingConfig()
    fee, slippage = (0.0, 0.0) if frictionless else (config.fee, config.slippage)
    costs = {"initial_balance": config.initial_balance, "fee": fee, "slippage": slippage}
    band = fee + slippage
    window = f"{job.test_start[:10]}..{job.test_end[:10]}"
    inputs = {}
    for split in SPLITS:
        slices = {name: getattr(market_split, split) for name, market_split in splits.items()}
        features = with_context(slices) if context else {name: m.features for name, m in slices.items()}
        if calendar:
            features = {name: np.concatenate([values, calendar_columns(slices[name].timestamps)], axis=1)
                        for name, values in features.items()}
        inputs[split] = {name: expand(values, reader) for name, values in features.items()}
    hold_sharpe = {(name, split): run_policy(getattr(market_split, split), buy_and_hold_policy, "buy_and_hold",
                                             market_split.periods_per_year, **costs).metrics["sharpe"]
                   for name, market_split in splits.items() for split in SPLITS}
    pooled_x = np.concatenate(list(inputs["train"].values()))
    records = []
    for horizon in horizons:
        pooled_y = np.concatenate([forward_log_returns(s.train.close, horizon) for s in splits.values()])
        coef, intercept = fit_ridge(pooled_x, pooled_y, alpha)
        for name, market_split in splits.items():
            for split in SPLITS:
                found = probe_window(getattr(market_split, split), inputs[split][name], coef, intercept, horizon,
                                     band, market_split.periods_per_year, costs, hold_sharpe[name, split])
                records.append({"feature_set": feature_set, "reader": reader, "context": context, "calendar": calendar,
                                "horizon": horizon, "market": name, "split": split, "fold": job.fold,
                                "window": window, **found})
    return records


VOLATILITY_BARS = 24
EXPOSURE_RULES = ("vol_filter", "vol_half", "vol_scaled")


def trailing_volatility(close: np.ndarray, bars: int = VOLATILITY_BARS) -> np.ndarray:
    """Standard deviation of the last ``bars`` log returns ending at each row (NaN before there are
    ``bars``): known at the row's close, so it can set the exposure held over the next bar."""
    returns = pd.Series(np.diff(np.log(np.asarray(close, dtype=np.float64))))
    rolled = returns.rolling(bars).std(ddof=1).to_numpy()
    return np.concatenate([[np.nan], rolled])


def exposure(rule: str, volatility: np.ndarray, train_volatility: np.ndarray) -> np.ndarray:
    """The exposure (0..1) ``rule`` holds after each row; full exposure while the volatility is unknown."""
    known = train_volatility[np.isfinite(train_volatility)]
    vol = np.where(np.isfinite(volatility), volatility, 0.0)
    if rule == "vol_filter":
        return np.where(vol <= np.quantile(known, 0.8), 1.0, 0.0)
    if rule == "vol_half":
        return np.where(vol <= np.median(known), 1.0, 0.5)
    if rule == "vol_scaled":
        return np.minimum(1.0, np.median(known) / np.maximum(vol, 1e-12))
    if rule == "hold":
        return np.ones(len(volatility))
    raise ValueError(f"unknown exposure rule {rule!r}")


def exposure_equity(close: np.ndarray, weights: np.ndarray, cost: float) -> np.ndarray:
    """Equity (from 1) holding ``weights[t]`` of it in the market over bar t -> t+1, paying ``cost`` per
    unit of exposure changed (the first entry included)."""
    simple = np.diff(np.asarray(close, dtype=np.float64)) / np.asarray(close, dtype=np.float64)[:-1]
    held = np.asarray(weights, dtype=np.float64)[:-1]
    turnover = np.abs(np.diff(np.concatenate([[0.0], held])))
    return np.concatenate([[1.0], np.cumprod(1.0 + held * simple - cost * turnover)])


def exposure_fold(job: Any, frictionless: bool = False) -> list[dict[str, Any]]:
    """Every exposure rule on every market and split of one fold, against buy-and-hold computed alike."""
    splits = market_splits(job, "basic")
    config = TrainingConfig()
    cost = 0.0 if frictionless else config.fee + config.slippage
    window = f"{job.test_start[:10]}..{job.test_end[:10]}"
    records = []
    for name, market_split in splits.items():
        train_volatility = trailing_volatility(market_split.train.close)
        for split in SPLITS:
            market = getattr(market_split, split)
            volatility = trailing_volatility(market.close)
            days = max(len(market) - 1, 1) / 24
            hold = sharpe_ratio(exposure_equity(market.close, exposure("hold", volatility, train_volatility), cost),
                                market_split.periods_per_year)
            for rule in EXPOSURE_RULES:
                weights = exposure(rule, volatility, train_volatility)
                sharpe = sharpe_ratio(exposure_equity(market.close, weights, cost), market_split.periods_per_year)
                records.append({"rule": rule, "market": name, "split": split, "fold": job.fold, "window": window,
                                "sharpe": sharpe, "buy_and_hold_sharpe": hold, "excess_sharpe": sharpe - hold,
                                "exposure": float(weights[:-1].mean()),
                                "turnover_per_month": float(np.abs(np.diff(weights[:-1])).sum() * 30 / days)})
    return records


def summarize_exposure(records: list[dict[str, Any]], rule: str, split: str) -> list[object]:
    """One table row of an exposure rule: excess Sharpe over buy-and-hold with its t interval."""
    rows = [r for r in records if (r["rule"], r["split"]) == (rule, split)]
    excess = [r["excess_sharpe"] for r in rows]
    lo, hi = cluster_t_interval(excess, [r["window"] for r in rows])
    return [rule, split, len(rows), f"{np.mean(excess):+.2f} [{lo:+.2f}, {hi:+.2f}]",
            f"{sum(v > 0 for v in excess)}/{len(excess)}", f"{np.mean([r['exposure'] for r in rows]):.2f}",
            f"{np.mean([r['turnover_per_month'] for r in rows]):.1f}"]


def summarize(records: list[dict[str, Any]], feature_set: str, horizon: int, split: str) -> list[object]:
    """One table row: IC and excess Sharpe with t intervals over calendar windows, wins over buy-and-hold."""
    rows = [r for r in records if (r["feature_set"], r["horizon"], r["split"]) == (feature_set, horizon, split)]
    clusters = [r["window"] for r in rows]
    ic, excess = [r["ic"] for r in rows], [r["excess_sharpe"] for r in rows]
    ic_lo, ic_hi = cluster_t_interval(ic, clusters)
    ex_lo, ex_hi = cluster_t_interval(excess, clusters)
    return [feature_set, horizon, split, len(rows), f"{np.mean(ic):+.3f} [{ic_lo:+.3f}, {ic_hi:+.3f}]",
            f"{sum(v > 0 for v in ic)}/{len(ic)}", f"{np.mean(excess):+.2f} [{ex_lo:+.2f}, {ex_hi:+.2f}]",
            f"{sum(v > 0 for v in excess)}/{len(excess)}", f"{np.mean([r['trades_per_month'] for r in rows]):.1f}",
            f"{np.mean([r['exposure'] for r in rows]):.2f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=7, help="the plan's last folds (default 7, the screen's; 0: "
                        "every fold the markets' common period holds)")
    parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS), help="bars ahead")
    parser.add_argument("--feature-sets", nargs="+", choices=FEATURE_SETS, default=list(FEATURE_SETS))
    parser.add_argument("--data", nargs="+", default=[str(SHARED_DATA / f"{m}.csv") for m in MARKETS],
                        help="market files (default: the four shared markets)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard")
    parser.add_argument("--reader", choices=READERS, default="linear", help="linear: ridge on the features; "
                        "quadratic: on the features and their pairwise products (default linear)")
    parser.add_argument("--context", action="store_true", help="each market's features beside the other "
                        "markets' mean at the same hour (what other markets' moves add)")
    parser.add_argument("--calendar", action="store_true", help="plus the hour of day and day of week, one-hot "
                        "(any intraday or weekday pattern)")
    parser.add_argument("--alpha", type=float, default=RIDGE_ALPHA, help=f"ridge penalty per training row "
                        f"(default {RIDGE_ALPHA}; near 0 is least squares)")
    parser.add_argument("--frictionless", action="store_true", help="no fees, slippage or band: the signal's "
                        "worth before costs")
    parser.add_argument("--out", default=None, help="JSON file for every record (default: none)")
    args = parser.parse_args(argv)
    if min(args.horizons) < 1 or args.folds < 0 or not args.alpha > 0:
        print("error: --horizons must be whole bars >= 1, --folds >= 0 and --alpha > 0", file=sys.stderr)
        return 2
    started = time.perf_counter()
    budget = replace(BUDGETS[args.budget], folds=args.folds, seeds=1)
    try:
        jobs = lever_jobs(WINDOW_LEVER, args.data, budget, "unused")  # windows only; nothing is trained
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    records = [r for job in jobs for fs in args.feature_sets
               for r in probe_fold(job, fs, tuple(args.horizons), args.frictionless, args.reader, args.context,
                                    args.calendar, args.alpha)]
    costs = "no fees or slippage" if args.frictionless else "the default fee and slippage"
    print(f"{machine()}; {len(jobs)} folds x {len(args.data)} markets in {time.perf_counter() - started:.0f} s; "
          f"{costs}; {args.reader} reader{' with market context' if args.context else ''}"
          f"{' with the calendar' if args.calendar else ''}\n")
    print("Ridge probe fitted on each fold's training rows (markets pooled): rank IC of its prediction with the "
          "H-bar return ahead, and its band policy's Sharpe minus buy-and-hold's; t intervals over calendar "
          "windows; 'n>0': windows with a positive value.\n")
    headers = ["features", "H", "split", "n", "IC [95% CI]", "IC>0", "excess Sharpe [95% CI]", "n>0",
               "trades/mo", "exposure"]
    rows = [summarize(records, fs, h, split) for fs in args.feature_sets for h in args.horizons for split in SPLITS
            if any(r["feature_set"] == fs for r in records)]
    print(table(headers, rows))
    exposures = [r for job in jobs for r in exposure_fold(job, args.frictionless)]
    print("\nExposure rules on the trailing 24-bar volatility (close-to-close returns, cost per unit of exposure "
          "changed): Sharpe minus buy-and-hold's computed alike.\n")
    print(table(["rule", "split", "n", "excess Sharpe [95% CI]", "n>0", "exposure", "turnover/mo"],
                [summarize_exposure(exposures, rule, split) for rule in EXPOSURE_RULES for split in SPLITS]))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "records": records, "exposure_rules": exposures},
                                             indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
