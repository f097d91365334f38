"""The walk-forward verdict: pure functions from fold outcomes to tables, statistics and one sentence.

An outcome is one market's view of what ``run_fold_job`` returns for one (market, fold, seed) (see
``market_outcomes``): its ``job`` (with the windows), ``test`` metrics of every policy and
``equity`` curves; a fold's seed ensemble is an outcome whose job has ``ensemble`` set. The unit of
evidence is the fold: the policy judged is the fold's ensemble when there is one, else the mean of
its seeds (their spread is reported apart), and the confidence interval of the mean excess Sharpe
over buy-and-hold is a t interval with a cluster-robust standard error over test windows: the
markets judged on one calendar window move together (crypto prices are correlated), so they count
as one piece of evidence rather than several, and with the handful of windows a walk-forward has,
a t interval is the honest width (a percentile bootstrap over five windows is about 40% narrower).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

BASELINES = ("buy_and_hold", "cash", "ma_crossover", "random")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# A test window's regime from buy-and-hold's return over it.
REGIME_THRESHOLD = 0.10
# A fold whose Sharpe is this close to buy-and-hold's is reported as level with it: an agent that held
# the whole window (or entered a bar late) neither lost to holding nor beat it.
LEVEL_SHARPE = 0.01


def regime(buy_and_hold_return: float) -> str:
    """bull above +10%, bear below -10%, sideways in between (buy-and-hold's return over the window)."""
    if buy_and_hold_return > REGIME_THRESHOLD:
        return "bull"
    if buy_and_hold_return < -REGIME_THRESHOLD:
        return "bear"
    return "sideways"


def _clustered(values: Iterable[float],
               clusters: Iterable[Hashable] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(values, each value's cluster index, the number of clusters); no labels: one cluster each."""
    data = np.asarray(list(values), dtype=np.float64)
    labels = list(range(data.size)) if clusters is None else list(clusters)
    if len(labels) != data.size:
        raise ValueError(f"{len(labels)} cluster labels for {data.size} values")
    ids: dict[Hashable, int] = {}
    cluster_of = np.array([ids.setdefault(label, len(ids)) for label in labels], dtype=np.int64)
    return data, cluster_of, len(ids)


def bootstrap_mean_ci(values: Iterable[float], confidence: float = CONFIDENCE,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      clusters: Iterable[Hashable] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) with fewer than two clusters.

    ``clusters`` labels each value; values that share a label are drawn together (a cluster
    bootstrap), so correlated values are not counted as independent evidence. Without labels every
    value is its own cluster: the plain bootstrap.
    """
    data, cluster_of, groups = _clustered(values, clusters)
    if groups < 2:
        return float("nan"), float("nan")
    sums = np.bincount(cluster_of, weights=data, minlength=groups)
    counts = np.bincount(cluster_of, minlength=groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, groups, size=(resamples, groups))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


# Student's t 97.5% quantiles for 1-10 degrees of freedom; beyond them a Cornish-Fisher expansion
# (within 0.3% from 11 on) spares the package a scipy dependency for one number.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` (>= 1) degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def cluster_t_interval(values: Iterable[float],
                       clusters: Iterable[Hashable] | None = None) -> tuple[float, float]:
    """95% t interval of the mean, values that share a cluster label counted as one observation;
    (nan, nan) with fewer than two clusters.

    The standard error is cluster-robust (CR1: each cluster's summed deviations from the mean, scaled
    by G / (G - 1)) with G - 1 degrees of freedom, so with equal clusters it is the plain t interval
    over the cluster means, and the interval is centred on the mean of all values. Without labels
    every value is its own cluster: the ordinary t interval.
    """
    data, cluster_of, groups = _clustered(values, clusters)
    if groups < 2:
        return float("nan"), float("nan")
    mean = float(data.mean())
    deviations = np.bincount(cluster_of, weights=data - mean, minlength=groups)
    variance = groups / (groups - 1) * float(np.sum(deviations**2)) / data.size**2
    half = t_quantile_975(groups - 1) * math.sqrt(variance)
    return mean - half, mean + half


def _key(outcome: dict[str, Any]) -> tuple[str, int]:
    return outcome["job"]["market"], int(outcome["job"]["fold"])


def is_ensemble(outcome: dict[str, Any]) -> bool:
    """Whether ``outcome`` is a fold's seed ensemble rather than one seed's agent."""
    return bool(outcome["job"].get("ensemble"))


def trades_per_month(metrics: dict[str, Any], periods_per_year: float) -> float:
    """Orders filled per 30.4 days (a twelfth of a year) of the backtest behind ``metrics``."""
    months = metrics["steps"] / periods_per_year * 12.0
    return float(metrics["trades"] / months) if months > 0 else 0.0


def fold_rows(outcomes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (market, fold): baselines, the agent per seed, the policy judged and the comparison.

    The policy judged is the fold's seed ensemble when there is one, else the mean over its seeds.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for outcome in outcomes:
        groups.setdefault(_key(outcome), []).append(outcome)
    rows = []
    for (market, fold), group in sorted(groups.items()):
        members = sorted((o for o in group if not is_ensemble(o)), key=lambda o: o["job"]["seed"])
        ensemble = next((o for o in group if is_ensemble(o)), None)
        job, test = members[0]["job"], members[0]["test"]
        periods = float(members[0]["periods_per_year"])
        baselines = {name: test[name] for name in BASELINES if name in test}
        bh, ma = baselines["buy_and_hold"], baselines.get("ma_crossover")
        agent_sharpes = np.array([m["test"]["agent"]["sharpe"] for m in members])
        seed_metrics = [m["test"]["agent"] for m in members]
        if ensemble is not None:
            judged = ensemble["test"]["agent"]
            policy = f"{ensemble['job']['ensemble']} ensemble of {len(members)} seed(s)"
            sharpe, ret, drawdown = judged["sharpe"], judged["total_return"], judged["max_drawdown"]
            trades = trades_per_month(judged, periods)
            exposure = judged["exposure"]
        else:
            policy = f"mean of {len(members)} seed(s)"
            sharpe = float(agent_sharpes.mean())
            ret = float(np.mean([m["total_return"] for m in seed_metrics]))
            drawdown = float(np.mean([m["max_drawdown"] for m in seed_metrics]))
            trades = float(np.mean([trades_per_month(m, periods) for m in seed_metrics]))
            exposure = float(np.mean([m["exposure"] for m in seed_metrics]))
        excess = agent_sharpes - bh["sharpe"]
        best = max(baselines, key=lambda n: baselines[n]["sharpe"])
        rows.append({
            "market": market,
            "fold": fold,
            "windows": {part: [job[f"{part}_start"], job[f"{part}_end"]] for part in ("train", "validation", "test")},
            "regime": regime(bh["total_return"]),
            "baselines": baselines,
            "policy": policy,
            "pooled": bool(job.get("pooled")),
            "agent": {str(m["job"]["seed"]): m["test"]["agent"] for m in members},
            "ensemble": None if ensemble is None else ensemble["test"]["agent"],
            "validation": {str(m["job"]["seed"]): m["validation"] for m in members},
            "validation_excess_sharpe": _validation_excess([ensemble] if ensemble else members),
            "agent_sharpe": float(sharpe),
            "agent_sharpe_std": float(agent_sharpes.std(ddof=1)) if len(members) > 1 else 0.0,
            "agent_return": float(ret),
            "agent_max_drawdown": float(drawdown),
            "agent_trades_per_month": float(trades),
            # Share of the window's bars spent long: how much of buy-and-hold's bet the agent took.
            "agent_exposure": float(exposure),
            "excess_sharpe": float(sharpe - bh["sharpe"]),
            "excess_sharpe_range": [float(excess.min()), float(excess.max())],
            "best_baseline": best,
            "beats_buy_and_hold": bool(sharpe > bh["sharpe"]),
            "level_with_buy_and_hold": bool(abs(sharpe - bh["sharpe"]) < LEVEL_SHARPE),
            "beats_ma_crossover": bool(ma is not None and sharpe > ma["sharpe"]),
            "drawdown_within_buy_and_hold": bool(drawdown <= bh["max_drawdown"]),
            "beats_best_baseline": bool(sharpe > baselines[best]["sharpe"]),
        })
    return rows


def _validation_excess(outcomes: list[dict[str, Any]]) -> float | None:
    """Validation Sharpe minus buy-and-hold's on the same market's validation window, the mean over
    ``outcomes`` (the ensemble, or the seeds); None for outcomes without validation backtests."""
    values = [o["validation_backtest"]["agent"]["sharpe"] - o["validation_backtest"]["buy_and_hold"]["sharpe"]
              for o in outcomes if "validation_backtest" in o]
    return float(np.mean(values)) if values else None


def stitched_curves(outcomes: Iterable[dict[str, Any]], market: str) -> dict[str, np.ndarray]:
    """Out-of-sample growth of 1 through the market's test windows in order, per policy.

    ``agent`` is (seeds, points); ``ensemble``, when every fold has one, and the baselines are
    (points,). Each window's curve is chained onto the end of the one before.
    """
    by_fold: dict[int, list[dict[str, Any]]] = {}
    ensembles: dict[int, dict[str, Any]] = {}
    for outcome in outcomes:
        if outcome["job"]["market"] != market:
            continue
        if is_ensemble(outcome):
            ensembles[int(outcome["job"]["fold"])] = outcome
        else:
            by_fold.setdefault(int(outcome["job"]["fold"]), []).append(outcome)
    folds = [sorted(by_fold[f], key=lambda o: o["job"]["seed"]) for f in sorted(by_fold)]
    seeds = min(len(members) for members in folds)

    def chain(curves: list[np.ndarray]) -> np.ndarray:
        pieces, level = [], 1.0
        for curve in curves:
            growth = np.asarray(curve, dtype=np.float64) / curve[0] * level
            pieces.append(growth if not pieces else growth[1:])
            level = growth[-1]
        return np.concatenate(pieces)

    curves = {name: chain([members[0]["equity"][name] for members in folds]) for name in BASELINES}
    curves["agent"] = np.stack([chain([members[s]["equity"]["agent"] for members in folds]) for s in range(seeds)])
    if ensembles and set(ensembles) == set(by_fold):
        curves["ensemble"] = chain([ensembles[f]["equity"]["agent"] for f in sorted(by_fold)])
    return curves


def summarize(rows: list[dict[str, Any]], stitched: dict[str, dict[str, np.ndarray]], label: str) -> dict[str, Any]:
    """The aggregate of ``rows`` (folds of one or more markets) and its plain sentence.

    ``stitched`` maps each market in ``rows`` to its ``stitched_curves``; with several markets the
    stitched returns are their equal-weight mean.
    """
    excess = [r["excess_sharpe"] for r in rows]
    low, high = cluster_t_interval(excess, clusters=(tuple(r["windows"]["test"]) for r in rows))
    agent_finals = np.array([curves["agent"][:, -1] - 1.0 for curves in stitched.values()])  # (markets, seeds)
    # The policy judged: the seeds' ensemble where every market has one, else the mean over seeds.
    judged_final = (float(np.mean([c["ensemble"][-1] - 1.0 for c in stitched.values()]))
                    if all("ensemble" in c for c in stitched.values()) else float(agent_finals.mean()))
    validation = [r["validation_excess_sharpe"] for r in rows if r.get("validation_excess_sharpe") is not None]
    summary = {
        "label": label,
        "folds": len(rows),
        "test_days": float(sum(_days(r["windows"]["test"]) for r in rows)),
        "seeds": int(agent_finals.shape[1]),
        "beats_buy_and_hold": sum(r["beats_buy_and_hold"] for r in rows),
        "level_with_buy_and_hold": sum(r["level_with_buy_and_hold"] for r in rows),
        "beats_best_baseline": sum(r["beats_best_baseline"] for r in rows),
        "beats_ma_crossover": sum(r["beats_ma_crossover"] for r in rows),
        "drawdown_within_buy_and_hold": sum(r["drawdown_within_buy_and_hold"] for r in rows),
        "policy": "; ".join(dict.fromkeys(r["policy"] for r in rows)),
        "trades_per_month": float(np.mean([r["agent_trades_per_month"] for r in rows])),
        "exposure": float(np.mean([r["agent_exposure"] for r in rows])),
        "mean_validation_excess_sharpe": float(np.mean(validation)) if validation else None,
        "mean_excess_sharpe": float(np.mean(excess)),
        "excess_sharpe_ci": [low, high],
        "confidence": CONFIDENCE,
        "agent_max_drawdown": float(np.mean([r["agent_max_drawdown"] for r in rows])),
        "buy_and_hold_max_drawdown": float(np.mean([r["baselines"]["buy_and_hold"]["max_drawdown"] for r in rows])),
        "stitched_return": {
            "agent": judged_final,
            **{name: float(np.mean([c[name][-1] - 1.0 for c in stitched.values()])) for name in BASELINES},
        },
        "seed_spread": {
            "sharpe_std_within_fold": float(np.mean([r["agent_sharpe_std"] for r in rows])),
            "stitched_return_min": float(agent_finals.mean(axis=0).min()),
            "stitched_return_max": float(agent_finals.mean(axis=0).max()),
        },
        "regimes": {name: sum(r["regime"] == name for r in rows) for name in ("bull", "bear", "sideways")},
    }
    summary["sentence"] = sentence(summary)
    return summary


def _days(window: list[str]) -> float:
    import pandas as pd

    return (pd.Timestamp(window[1]) - pd.Timestamp(window[0])) / pd.Timedelta(days=1)


def sentence(summary: dict[str, Any]) -> str:
    """The verdict in one plain sentence; says "no evidence" unless the whole interval is above 0."""
    n = summary["folds"]
    low, high = summary["excess_sharpe_ci"]
    head = (f"{summary['label']}: in {n} out-of-sample test window{'s' if n != 1 else ''} "
            f"({summary['test_days']:.0f} days) the agent's Sharpe beat buy-and-hold's in "
            f"{summary['beats_buy_and_hold']} of {n} and the best simple baseline's in "
            f"{summary['beats_best_baseline']} of {n}, with a mean excess Sharpe over buy-and-hold of "
            f"{summary['mean_excess_sharpe']:+.2f}")
    percent = f"{summary['confidence']:.0%}"
    if not np.isfinite(low):
        return f"{head}; one fold gives no interval: no evidence of an edge over buy-and-hold at {percent}."
    interval = f" ({percent} CI {low:+.2f} to {high:+.2f})"
    if low > 0:
        return f"{head}{interval}: evidence of an edge over buy-and-hold at {percent}."
    if high < 0:
        return f"{head}{interval}: no evidence of an edge over buy-and-hold at {percent}; it did worse."
    return f"{head}{interval}: no evidence of an edge over buy-and-hold at {percent}."
