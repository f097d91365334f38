"""Run outputs: training_results.json, training_summary.txt and training_report.png (all atomic)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.evaluation.backtest import BacktestResult
from nexlify.io import write_bytes_atomic, write_text_atomic

# The metrics table's rows, (backtest key, label, format), in the order printed.
# What the equity curve alone shows: the return and the risk taken for it.
EQUITY_ROWS = (
    ("final_equity", "Final equity", "{:,.2f}"),
    ("total_return", "Total return", "{:+.2%}"),
    ("annualized_return", "Annualised return", "{:+.2%}"),
    ("annualized_volatility", "Annualised volatility", "{:.2%}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("sortino", "Sortino", "{:.2f}"),
    ("max_drawdown", "Max drawdown", "{:.2%}"),
    ("calmar", "Calmar", "{:.2f}"),
)
# How the policy traded to get there (from its positions and fills).
TRADING_ROWS = (
    ("trades", "Trades", "{:.0f}"),
    ("win_rate", "Win rate", "{:.1%}"),
    ("exposure", "Exposure", "{:.1%}"),
    ("fees_paid", "Fees paid", "{:,.2f}"),
)
METRIC_ROWS = EQUITY_ROWS + TRADING_ROWS


def write_results_json(path: str | Path, results: dict[str, Any]) -> None:
    """Strict JSON (no NaN or Infinity, which JSON does not have): a non-finite number is written as null."""
    write_text_atomic(path, json.dumps(_finite_or_none(results), indent=2, default=_json_default, allow_nan=False))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _finite_or_none(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def metrics_table(backtests: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one column per policy, one row per metric."""
    names = list(backtests)
    width = max(12, *(len(n) for n in names)) + 2
    lines = ["Metric".ljust(24) + "".join(n.rjust(width) for n in names)]
    for key, label, fmt in METRIC_ROWS:
        cells = []
        for name in names:
            value = backtests[name].get(key)
            cells.append((fmt.format(value) if value is not None else "-").rjust(width))
        lines.append(label.ljust(24) + "".join(cells))
    return "\n".join(lines)


def write_summary(path: str | Path, results: dict[str, Any]) -> str:
    """The human-readable report of a run; returns the text written."""
    run = results["run"]
    config = results["config"]
    lines = [
        "Nexlify Adaptive RL Agent: training summary",
        "=" * 44,
        f"Data: {run['data_source']}  ({run['data_start']} .. {run['data_end']}, timeframe {run['timeframe']})",
        f"Splits (rows): train {run['rows']['train']}, validation {run['rows']['validation']}, "
        f"test {run['rows']['test']}",
        f"Device: {config['device']}  model {config['model_size']}  batch {config['batch_size']} x "
        f"{config['gradient_accumulation_steps']} accumulation  buffer {config['buffer_size']:,}  "
        f"precision {config['precision']}  parallel envs {config['parallel_envs']}",
        f"Episodes: {run['episodes_done']}  transitions: {run['transitions']:,}  "
        f"training time: {run['train_seconds']:.1f} s  ({run['transitions_per_sec']:,.0f} transitions/s)",
        f"Best model: episode {run['best_episode']} by validation {config['validation_metric']} "
        f"= {_num(run['best_score'])}",
        "",
        "Held-out test split (same fees and slippage for every policy):",
        metrics_table(results["test"]),
        "",
    ]
    if results.get("events"):
        lines.append("Adaptations during training:")
        lines += [f"  episode {e['episode']}: {e['message']}" for e in results["events"]]
        lines.append("")
    window_days = run["rows"]["test"] * pd.Timedelta(run["timeframe"]) / pd.Timedelta(days=1)
    lines.append(single_window_verdict(results["test"], window_days))
    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return text


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def single_window_verdict(test: dict[str, dict[str, Any]], window_days: float) -> str:
    """The plain verdict of one test window: buy-and-hold first, the window's length, then where to look."""
    agent, hold = test.get("agent"), test.get("buy_and_hold")
    if not agent or not hold:
        return ""
    relation = "beat" if agent["sharpe"] > hold["sharpe"] else "did not beat"
    others = [n for n in test if n not in ("agent", "buy_and_hold") and agent["sharpe"] > test[n]["sharpe"]]
    return (f"Verdict: on this {window_days:.0f}-day test window buy-and-hold returned {hold['total_return']:+.1%} "
            f"(Sharpe {hold['sharpe']:.2f}) and the agent {agent['total_return']:+.1%} (Sharpe {agent['sharpe']:.2f}): "
            f"the agent {relation} buy-and-hold"
            f"{' (it beat ' + ', '.join(others) + ')' if others else ''}. One {window_days:.0f}-day window is one "
            "market regime and proves little; run `nexlify walkforward` for a verdict over many unseen windows.")


@dataclass(frozen=True)
class TrainingRound:
    """Episodes that ran side by side (they share the round's loss and epsilon)."""

    end_episode: int
    returns: tuple[float, ...]
    loss: float | None
    epsilon: float


def training_rounds(episodes: list[dict[str, Any]]) -> list[TrainingRound]:
    """Group consecutive episode records into the rounds they ran in: a round's records carry the
    same loss, epsilon and speed (measured once per round)."""
    rounds: list[TrainingRound] = []
    key = None
    for record in episodes:
        this = (record["loss"], record["epsilon"], record.get("transitions_per_sec"))
        if rounds and this == key:
            last = rounds[-1]
            rounds[-1] = TrainingRound(record["episode"], (*last.returns, record["return"]), last.loss, last.epsilon)
        else:
            rounds.append(TrainingRound(record["episode"], (record["return"],), record["loss"], record["epsilon"]))
        key = this
    return rounds


def write_report_png(
    path: str | Path,
    results: dict[str, Any],
    agent_backtest: BacktestResult,
    buy_and_hold: BacktestResult,
) -> None:
    """Learning curves, validation score and the test equity curve with trades marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    rounds = training_rounds(results["episodes"])
    widest = max((len(r.returns) for r in rounds), default=1)
    ends = [r.end_episode for r in rounds]
    ax = axes[0, 0]
    if widest == 1:  # one episode at a time: each point is an episode
        returns = [r.returns[0] * 100 for r in rounds]
        ax.plot(ends, returns, lw=0.8, alpha=0.6, label="episode return")
        if len(ends) >= 10:
            window = max(len(ends) // 20, 5)
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(ends[window - 1:], smooth, lw=1.5, label=f"mean of {window}")
        ax.set_title("Training episodes (with exploration)")
    else:  # parallel episodes share a round's loss and epsilon: one point per round, not N copies
        ax.fill_between(ends, [min(r.returns) * 100 for r in rounds], [max(r.returns) * 100 for r in rounds],
                        alpha=0.25, label="min-max of the round")
        ax.plot(ends, [float(np.mean(r.returns)) * 100 for r in rounds], marker="o", ms=3, lw=1.2,
                label="mean of the round")
        ax.set_title(f"Training: {len(rounds)} round(s) of up to {widest} parallel episodes (with exploration)")
    ax.set_xlabel("episodes completed")
    ax.set_ylabel("return %")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    losses = [(r.end_episode, r.loss) for r in rounds if r.loss is not None]
    marker = "o" if len(rounds) < 50 else None
    if losses:
        ax.plot(*zip(*losses, strict=True), lw=1.0, color="tab:red", marker=marker, ms=3)
        ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(ends, [r.epsilon for r in rounds], color="tab:gray", lw=1.0, ls="--", marker=marker, ms=3)
    ax2.set_ylabel("epsilon")
    ax.set_title("Loss (log) and epsilon" + (" at the end of each round" if widest > 1 else ""))
    ax.set_xlabel("episodes completed")
    ax = axes[1, 0]
    validation = results["validation"]
    if validation:
        ax.plot([v["episode"] for v in validation], [v["score"] for v in validation], marker="o", ms=3)
        best = results["run"]["best_episode"]
        if best is not None:
            ax.axvline(best, color="tab:green", ls=":", label=f"best (episode {best})")
            ax.legend(fontsize=8)
    ax.set_title(f"Validation {results['config']['validation_metric']} (greedy policy)")
    ax.set_xlabel("episode")
    ax = axes[1, 1]
    times = np.asarray(agent_backtest.timestamps)
    x = times if len(times) == agent_backtest.equity.shape[1] else np.arange(agent_backtest.equity.shape[1])
    ax.plot(x, agent_backtest.equity[0], label="agent", lw=1.2)
    ax.plot(x, buy_and_hold.equity[0], label="buy and hold", lw=1.0, alpha=0.8)
    actions = agent_backtest.actions[0]
    position = agent_backtest.position[0]
    buys = np.flatnonzero(np.diff(position) > 0) + 1
    sells = np.flatnonzero(np.diff(position) < 0) + 1
    ax.scatter(x[buys], agent_backtest.equity[0][buys], marker="^", color="tab:green", s=14, label="buy", zorder=3)
    ax.scatter(x[sells], agent_backtest.equity[0][sells], marker="v", color="tab:red", s=14, label="sell",
               zorder=3)
    ax.set_title(f"Held-out test: equity ({int(len(actions))} steps)")
    ax.legend(fontsize=8)
    # Rotate only the dates: fig.autofmt_xdate() would hide the x labels of the other panels.
    ax.tick_params(axis="x", labelrotation=30)
    write_figure_png(fig, path)


def write_figure_png(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Lay ``fig`` out, write it to ``path`` as a PNG atomically (a crash never leaves half a chart) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
