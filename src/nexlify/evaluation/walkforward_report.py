"""Walk-forward outputs: walkforward_results.json, walkforward_summary.txt, walkforward_report.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.evaluation.report import write_figure_png, write_results_json
from nexlify.evaluation.verdict import BASELINES, LEVEL_SHARPE, stitched_curves
from nexlify.evaluation.walkforward import WalkforwardResult
from nexlify.io import write_text_atomic

RESULTS = "walkforward_results.json"
SUMMARY = "walkforward_summary.txt"
REPORT = "walkforward_report.png"
REGIME_COLOURS = {"bull": "tab:green", "bear": "tab:red", "sideways": "tab:gray"}


def write_outputs(result: WalkforwardResult, output_dir: str | Path, run: dict[str, Any] | None = None) -> None:
    """All three outputs of a walk-forward into ``output_dir`` (each written atomically)."""
    output_dir = Path(output_dir)
    write_results_json(output_dir / RESULTS, {"run": run or {}, **result.to_dict()})
    write_text_atomic(output_dir / SUMMARY, summary_text(result, run or {}))
    write_report_png(output_dir / REPORT, result)


def _day(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%Y-%m-%d")


def fold_table(rows: list[dict[str, Any]]) -> str:
    """One line per fold: its test window, regime, buy-and-hold, the agent and the best baseline."""
    header = (f"{'fold':>4}  {'test window':<23}  {'regime':<8}  {'B&H ret':>8}  {'B&H Shrp':>8}  "
              f"{'agent ret':>9}  {'agent Shrp':>13}  {'excess':>6}  {'agent DD':>8}  {'B&H DD':>7}  {'in mkt':>6}  "
              "best baseline")
    lines = [header]
    for r in rows:
        bh = r["baselines"]["buy_and_hold"]
        test = r["windows"]["test"]
        lines.append(
            f"{r['fold']:>4}  {_day(test[0])} .. {_day(test[1])}  {r['regime']:<8}  {bh['total_return']:>+8.1%}  "
            f"{bh['sharpe']:>8.2f}  {r['agent_return']:>+9.1%}  "
            f"{r['agent_sharpe']:>6.2f} ±{r['agent_sharpe_std']:>5.2f}  "
            f"{r['excess_sharpe']:>+6.2f}  {r['agent_max_drawdown']:>8.1%}  {bh['max_drawdown']:>7.1%}  "
            f"{r['agent_exposure']:>6.0%}  "
            f"{r['best_baseline']} ({r['baselines'][r['best_baseline']]['sharpe']:.2f})")
    return "\n".join(lines)


def aggregate_lines(summary: dict[str, Any]) -> list[str]:
    """The aggregate figures of one market (or all of them) as indented lines."""
    low, high = summary["excess_sharpe_ci"]
    stitched = summary["stitched_return"]
    spread = summary["seed_spread"]
    return [
        f"  agent judged: {summary['policy']}",
        f"  folds where the agent's Sharpe beat buy-and-hold's: {summary['beats_buy_and_hold']} of {summary['folds']} "
        f"(level with it, within {LEVEL_SHARPE}: {summary['level_with_buy_and_hold']}); "
        f"the moving-average rule's: {summary['beats_ma_crossover']} of {summary['folds']}; "
        f"the best simple baseline's: {summary['beats_best_baseline']} of {summary['folds']}",
        f"  mean excess Sharpe over buy-and-hold: {summary['mean_excess_sharpe']:+.2f} "
        f"({summary['confidence']:.0%} t CI over test windows: {low:+.2f} to {high:+.2f})",
        f"  mean max drawdown: agent {summary['agent_max_drawdown']:.1%}, buy-and-hold "
        f"{summary['buy_and_hold_max_drawdown']:.1%}; agent's at most buy-and-hold's in "
        f"{summary['drawdown_within_buy_and_hold']} of {summary['folds']} folds; agent trades per month "
        f"{summary['trades_per_month']:.1f}; mean position {summary['exposure']:.0%} "
        "(the share of the time long when positions are all-in; buy-and-hold: 100%)",
        "  stitched out-of-sample return: " + ", ".join(
            f"{name} {stitched[name]:+.1%}" for name in ("agent", *BASELINES)),
        f"  seed spread: Sharpe std within a fold {spread['sharpe_std_within_fold']:.2f}; stitched return per seed "
        f"{spread['stitched_return_min']:+.1%} .. {spread['stitched_return_max']:+.1%} ({summary['seeds']} seeds)",
        "  regimes (buy-and-hold over the window, +-10%): " + ", ".join(
            f"{count} {name}" for name, count in summary["regimes"].items()),
    ]


def _judged(run: dict[str, Any]) -> str:
    mode, choice = run.get("ensemble", "none"), run.get("model_choice", "best")
    if mode == "none":
        return "by their mean"
    models = {"best": "best models", "top2": "two best models", "last": "last (final) models",
              "all": "validated models, all of them"}[choice]
    return f"as a {mode} ensemble of their {models}"


def _markets_judged(run: dict[str, Any], markets: int) -> str:
    """Where several markets' folds lie (all of their history, or only the period they all share)
    and which policies they train."""
    policies = "one policy per fold pooled over its markets" if run.get("pooled") else "one policy per market"
    if markets < 2:
        return policies
    layout = ("folds in the period every market covers" if run.get("common_period") else
              "folds over all of the markets' history, each market on the folds its candles cover")
    return f"{layout}; {policies}"


def summary_text(result: WalkforwardResult, run: dict[str, Any]) -> str:
    """The human-readable walk-forward report, ending with the verdict sentence."""
    lines = ["Nexlify walk-forward evaluation", "=" * 31]
    if run:
        lines.append(f"Markets: {', '.join(result.markets)}; {run.get('seeds')} seed(s) per fold; "
                     f"{run.get('episodes')} episodes per fold; train {run.get('train_days')} days, validation "
                     f"{run.get('validation_days')} days, test windows {run.get('test_days_label')}; "
                     f"{_markets_judged(run, len(result.markets))}; "
                     f"seeds judged {_judged(run)}; "
                     f"fees {run.get('fee')}, slippage {run.get('slippage')} for every policy.")
        lines.append("")
    lines.append(f"Verdict: {result.verdict}")
    lines.append("")
    for market, summary in result.markets.items():
        lines.append(f"{market}")
        lines.append(fold_table([r for r in result.folds if r["market"] == market]))
        lines += aggregate_lines(summary)
        lines.append(f"  {summary['sentence']}")
        lines.append("")
    if len(result.markets) > 1:
        lines.append("All markets")
        lines += aggregate_lines(result.overall)
        lines.append("")
    lines.append("How to read this: each test window was unseen by its fold's training and model choice. "
                 "A positive mean excess Sharpe whose interval stays above 0 is evidence of an edge; an "
                 "interval that includes 0 means the agent may be no better than holding.")
    return "\n".join(lines) + "\n"


def write_report_png(path: str | Path, result: WalkforwardResult) -> None:
    """Per market: stitched out-of-sample equity against the baselines, and per-fold excess Sharpe
    (bar: the policy judged, whisker: seed range) coloured by the window's regime, with the mean's interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    markets = list(result.markets)
    fig, axes = plt.subplots(len(markets), 2, figsize=(14, 4 * len(markets)), squeeze=False)
    for row, market in enumerate(markets):
        rows = [r for r in result.folds if r["market"] == market]
        curves = stitched_curves(result.outcomes, market)
        ax = axes[row, 0]
        x = _stitched_times(rows)
        agent = curves["agent"]
        ax.plot(x, agent.mean(axis=0), lw=1.4, label=f"agent (mean of {len(agent)} seeds)", color="tab:blue")
        if len(agent) > 1:
            ax.fill_between(x, agent.min(axis=0), agent.max(axis=0), color="tab:blue", alpha=0.15, label="seed range")
        if "ensemble" in curves:
            ax.plot(x, curves["ensemble"], lw=1.6, label="agent (seeds' ensemble, judged)", color="tab:green")
        for name, colour in zip(BASELINES, ("tab:orange", "black", "tab:purple", "tab:gray"), strict=True):
            ax.plot(x, curves[name], lw=1.0, alpha=0.8, label=name.replace("_", " "), color=colour)
        for r in rows:
            start, end = (pd.Timestamp(t).tz_convert(None) for t in r["windows"]["test"])
            ax.axvspan(start, end, color=REGIME_COLOURS[r["regime"]], alpha=0.06)
        ax.set_title(f"{market}: stitched out-of-sample equity (growth of 1)")
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[row, 1]
        folds = [r["fold"] for r in rows]
        means = np.array([r["excess_sharpe"] for r in rows])
        ranges = np.array([r["excess_sharpe_range"] for r in rows])
        ax.bar(folds, means, color=[REGIME_COLOURS[r["regime"]] for r in rows], alpha=0.8)
        # The seeds' range on its own line, not as error bars around the bar: the ensemble judged is
        # another policy and may fall outside its seeds' range.
        ax.vlines(folds, ranges[:, 0], ranges[:, 1], color="black", lw=1)
        ax.scatter(np.repeat(folds, 2), ranges.ravel(), marker="_", color="black", s=40, zorder=3)
        summary = result.markets[market]
        low, high = summary["excess_sharpe_ci"]
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(summary["mean_excess_sharpe"], color="tab:blue", ls="--", lw=1,
                   label=f"mean {summary['mean_excess_sharpe']:+.2f}")
        if np.isfinite(low):
            ax.axhspan(low, high, color="tab:blue", alpha=0.12, label=f"95% CI {low:+.2f} .. {high:+.2f}")
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=colour, alpha=0.8, label=f"{name} window") for name, colour in REGIME_COLOURS.items()]
        ax.set_xticks(folds)
        ax.set_xlabel("fold (bar: the policy judged; whisker: seed range)")
        ax.set_title(f"{market}: agent Sharpe minus buy-and-hold Sharpe per test window")
        ax.legend(handles=handles, fontsize=7)
    fig.autofmt_xdate()
    write_figure_png(fig, path, dpi=100)


def _stitched_times(rows: list[dict[str, Any]]) -> np.ndarray:
    """Times for a stitched curve: each window's points spread evenly over it (first point shared)."""
    pieces = []
    for i, r in enumerate(rows):
        start, end = (pd.Timestamp(t).tz_convert(None) for t in r["windows"]["test"])
        count = int(r["baselines"]["buy_and_hold"]["steps"]) + 1
        times = pd.date_range(start, end, periods=count).to_numpy()
        pieces.append(times if i == 0 else times[1:])
    return np.concatenate(pieces)
