"""A session's report from its journal: metrics against buy-and-hold over the same candles, and a chart.

The metrics are ``nexlify.evaluation.metrics.compute_metrics`` of the equity marks, the figures every
backtest reports; buy-and-hold is the benchmark account the session kept beside its own (bought at
the open after the first decision, with the same fee and slippage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.data.market import periods_per_year
from nexlify.errors import ConfigError
from nexlify.evaluation.metrics import compute_metrics
from nexlify.evaluation.report import metrics_table, write_figure_png
from nexlify.trading.account import position_text
from nexlify.trading.journal import Journal, mark_level


def session_report(journal_path: str | Path) -> dict[str, Any]:
    """Metrics of the session and of buy-and-hold, with the span, candle counts and events."""
    path = Path(journal_path)
    if not path.is_file():
        raise ConfigError(f"--journal {path}: file not found; give the journal a session wrote")
    with Journal(path) as journal:
        meta = journal.meta()
        marks = journal.marks()
        kinds = list(journal.candle_kinds().values())
        events = journal.events()
        fills = journal.fills()
    if not meta or len(marks) < 2:
        raise ConfigError(f"--journal {path} holds {len(marks)} equity mark(s); a report needs a session that "
                          "has seen at least 2 candles")
    ppy = periods_per_year(pd.Timedelta(milliseconds=meta["timeframe_ms"]))
    equity = np.array([m["equity"] for m in marks])
    benchmark = np.array([m["bh_equity"] for m in marks])
    last = marks[-1]
    session = compute_metrics(equity, _levels(marks), ppy, last["fees_paid"], last["trades"])
    bh_bought = last["bh_units"] > 0
    bh_fee = meta["initial_balance"] / (1 + meta["fee"]) * meta["fee"] if bh_bought else 0.0
    buy_and_hold = compute_metrics(benchmark, np.array([m["bh_units"] > 0 for m in marks]), ppy, bh_fee,
                                   int(bh_bought))
    counts: dict[str, int] = {}
    for event in events:
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    return {
        "meta": meta, "marks": marks, "fills": fills, "session": session, "buy_and_hold": buy_and_hold,
        "candles": {kind: kinds.count(kind) for kind in ("traded", "missed", "late", "warmup")},
        "events": counts, "position": position_text(mark_level(last), last["units"]),
    }


def _levels(marks: list[dict[str, Any]]) -> np.ndarray:
    """The position level after each candle (0 flat, 0.5 half, 1 long), as a backtest reports it."""
    return np.array([mark_level(m) for m in marks])


def report_text(report: dict[str, Any]) -> str:
    meta, marks = report["meta"], report["marks"]
    span = f"{_time(marks[0]['candle_ts'])} .. {_time(marks[-1]['candle_ts'])}"
    candles = report["candles"]
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(report["events"].items())) or "none"
    return "\n".join([
        f"{meta['mode']} session on {meta['source']}, {span} ({len(marks)} candles: {candles['traded']} traded, "
        f"{candles['missed']} missed, {candles['late']} late)",
        f"Events: {events}",
        f"Position at the end: {report['position']}, cash {marks[-1]['cash']:,.2f}",
        metrics_table({"session": report["session"], "buy_and_hold": report["buy_and_hold"]}),
    ])


def write_equity_chart(path: str | Path, report: dict[str, Any]) -> None:
    """Equity of the session and of buy-and-hold over time, buys and sells (half-steps too) marked
    (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = report["marks"]
    times = pd.to_datetime([m["candle_ts"] for m in marks], unit="ms")
    equity = np.array([m["equity"] for m in marks])
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(times, equity, lw=1.2, label="session")
    ax.plot(times, [m["bh_equity"] for m in marks], lw=1.0, alpha=0.8, label="buy and hold")
    steps = np.diff(_levels(marks))
    for sign, marker, color, label in ((1, "^", "tab:green", "buy"), (-1, "v", "tab:red", "sell")):
        at = np.flatnonzero(np.sign(steps) == sign) + 1
        ax.scatter(times[at], equity[at], marker=marker, color=color, s=16, label=label, zorder=3)
    ax.set_title(f"{report['meta']['mode']} session on {report['meta']['source']}: equity")
    ax.set_ylabel("equity")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    write_figure_png(fig, path)


def _time(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
