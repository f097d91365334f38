"""Paper trading over a replayed feed: equal to the backtest to the cent, across kills and restarts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.cli import main
from nexlify.data.features import WARMUP_BARS, FeatureScaler
from nexlify.data.market import detect_timeframe, load_ohlcv, market_slice_from_frame, periods_per_year
from nexlify.trading.feeds import ReplayClock
from nexlify.trading.journal import Journal
from nexlify.trading.runner import TradeOptions, run_trade
from nexlify.training.pipeline import backtest_with_baselines
from trading_support import market_frame, rule_model, write_feed

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    frame = market_frame()
    return rule_model(folder / "model.pth", frame), write_feed(folder / "feed.csv", frame)


@pytest.fixture(scope="module")
def backtest(files):
    """The backtest `nexlify evaluate --data FEED` runs: the agent and buy-and-hold over the feed."""
    model, feed = files
    agent = AdaptiveDQNAgent.from_checkpoint(model, device="cpu")
    frame = load_ohlcv(feed)
    market = market_slice_from_frame(frame, FeatureScaler.from_dict(agent.checkpoint_metadata["scaler"]))
    return backtest_with_baselines(agent, market, periods_per_year(detect_timeframe(frame)), agent.config)


@pytest.fixture(scope="module")
def replayed(files, tmp_path_factory):
    """One `nexlify trade --feed FEED` session over the whole feed: its journal and its output."""
    model, feed = files
    journal = tmp_path_factory.mktemp("replayed") / "paper.sqlite"
    lines: list[str] = []
    run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lines.append)
    return journal, lines


def _marks(journal: Path) -> list[dict]:
    with Journal(journal) as j:
        return j.marks()


def _assert_equals_backtest(journal: Path, backtest) -> None:
    marks = _marks(journal)
    agent, bh = backtest["agent"], backtest["buy_and_hold"]
    # The same candles, marked one by one: bit-identical equity, so equal to the cent a fortiori.
    np.testing.assert_array_equal([m["equity"] for m in marks], agent.equity[0])
    np.testing.assert_array_equal([m["bh_equity"] for m in marks], bh.equity[0])
    np.testing.assert_array_equal([m["units"] > 0 for m in marks], agent.position[0].astype(bool))
    assert marks[-1]["trades"] == agent.metrics["trades"] and marks[-1]["fees_paid"] == agent.metrics["fees_paid"]


def test_paper_session_equals_nexlify_evaluate_to_the_cent(files, backtest, replayed, tmp_path):
    model, feed = files
    assert main(["evaluate", "--model", str(model), "--data", str(feed), "--out", str(tmp_path / "ev")]) == 0
    evaluated = json.loads((tmp_path / "ev" / "evaluation_results.json").read_text())["test"]["agent"]
    journal, lines = replayed
    out = "\n".join(lines)
    marks = _marks(journal)
    assert len(marks) == len(market_frame()) - WARMUP_BARS
    assert round(marks[-1]["equity"], 2) == round(evaluated["final_equity"], 2)
    assert evaluated["trades"] >= 6  # the rule model really trades: this comparison is not trivial
    _assert_equals_backtest(journal, backtest)
    # A status line per candle: time, price, action, position, equity, against buy-and-hold.
    status = [line for line in out.splitlines() if "buy&hold" in line]
    assert len(status) == len(marks)
    assert "close" in status[-1] and f"{marks[-1]['equity']:,.2f}" in status[-1]
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in journal.parent.glob("paper.sqlite*"))


def test_stop_and_resume_keeps_position_cash_and_pending_decision(files, backtest, tmp_path):
    model, feed = files
    journal = tmp_path / "j.sqlite"
    options = TradeOptions(model=model, feed=feed, journal=journal)
    rows = load_ohlcv(feed).index.as_unit("ms").asi8
    # Stop while long, right after a decision to sell (or buy): it must be filled at the next open.
    position = backtest["agent"].position[0]
    actions = backtest["agent"].actions[0]
    stop_step = next(t for t in range(20, len(actions)) if position[t] and actions[t] == 2)
    stop_ts = int(rows[WARMUP_BARS + stop_step])
    clock = ReplayClock(int(rows[WARMUP_BARS]), end_ms=stop_ts + 3_600_000 + 3_600_000 // 2)
    first = run_trade(options, out=lambda line: None, clock=clock)
    assert first["pending"] == "sell" and first["units"] > 0
    lines: list[str] = []
    run_trade(TradeOptions(model=model, feed=feed, journal=journal, balance=5_000.0), out=lines.append)
    assert any("restart" in line and "pending sell" in line for line in lines)  # and its own balance kept:
    _assert_equals_backtest(journal, backtest)
    with Journal(journal) as j:
        decisions = [ts for ts, _ in j.decisions()]
        resumed = j.events("restart")
    assert len(decisions) == len(set(decisions)) == len(rows) - WARMUP_BARS  # one per candle, none twice
    assert len(resumed) == 1


def test_a_journal_written_before_levels_resumes_its_all_in_position(files, backtest, tmp_path):
    model, feed = files
    journal = tmp_path / "old.sqlite"
    rows = load_ohlcv(feed).index.as_unit("ms").asi8
    position = backtest["agent"].position[0]
    stop = next(t for t in range(20, len(position)) if position[t] == 1.0)  # stopped while long
    clock = ReplayClock(int(rows[WARMUP_BARS]), end_ms=int(rows[WARMUP_BARS + stop]) + 3_600_000 * 3 // 2)
    assert run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lambda line: None,
                     clock=clock)["level"] == 1.0
    with sqlite3.connect(journal) as db:  # as written before levels were journaled
        db.execute("DROP TABLE levels")
    db.close()
    lines: list[str] = []
    run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lines.append)
    assert [line for line in lines if "restart" in line and "level 1" in line]
    _assert_equals_backtest(journal, backtest)


def test_killed_process_restarts_from_the_journal_and_still_equals_the_backtest(files, backtest, tmp_path):
    model, feed = files
    journal = tmp_path / "killed.sqlite"
    command = [sys.executable, "-m", "nexlify.cli", "trade", "--model", str(model), "--feed", str(feed),
               "--journal", str(journal), "--speed", str(3600 * 50)]  # 20 ms per hourly candle
    env = dict(os.environ, PYTHONPATH=str(SRC))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 30 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            if journal.exists():
                try:
                    with sqlite3.connect(journal) as db:
                        seen = db.execute("SELECT COUNT(*) FROM marks").fetchone()[0]
                except sqlite3.OperationalError:
                    pass  # tables not created yet
        assert process.poll() is None, process.stderr.read().decode()
        os.kill(process.pid, signal.SIGKILL)  # no cleanup of any kind
    finally:
        process.wait()
    killed_at = len(_marks(journal))
    assert 30 <= killed_at < len(backtest["agent"].equity[0])
    assert main(["trade", "--model", str(model), "--feed", str(feed), "--journal", str(journal)]) == 0
    _assert_equals_backtest(journal, backtest)


def test_report_prints_metrics_against_buy_and_hold_and_writes_a_chart(backtest, replayed, tmp_path, capsys):
    journal, _ = replayed
    chart = tmp_path / "r.png"
    assert main(["trade", "--report", "--journal", str(journal), "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    for label in ("Total return", "Sharpe", "Max drawdown", "Trades", "Fees paid", "session", "buy_and_hold"):
        assert label in out
    agent = backtest["agent"].metrics
    assert f"{agent['sharpe']:.2f}" in out and f"{agent['final_equity']:,.2f}" in out
    assert f"{backtest['buy_and_hold'].metrics['final_equity']:,.2f}" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_metrics_are_the_backtest_metrics(backtest, replayed):
    from nexlify.trading.report import session_report

    journal, _ = replayed
    report = session_report(journal)
    assert report["session"] == backtest["agent"].metrics
    assert report["buy_and_hold"] == pytest.approx(backtest["buy_and_hold"].metrics)
    assert report["candles"] == {"traded": len(report["marks"]), "missed": 0, "late": 0, "warmup": WARMUP_BARS}


@pytest.mark.parametrize(("argv", "message"), [
    (["trade"], "needs --model"),
    (["trade", "--model", "missing.pth"], "--model file not found"),
    (["trade", "--report"], "--report needs --journal"),
    (["trade", "--report", "--journal", "missing.sqlite"], "file not found"),
    (["trade", "--model", "{model}", "--speed", "10"], "--speed sets how fast a --feed"),
    (["trade", "--model", "{model}", "--feed", "missing.csv"], "--feed file not found"),
    (["trade", "--model", "{model}", "--live"], "--confirm-live"),
    (["trade", "--model", "{model}", "--live", "--confirm-live"], "--max-position"),
    (["trade", "--model", "{model}", "--live", "--confirm-live", "--max-position", "100", "--feed", "{feed}"],
     "cannot replay"),
    (["trade", "--model", "{model}", "--sandbox"], "--sandbox applies to --live"),
    (["trade", "--model", "{model}", "--paper", "--live"], "not allowed with argument"),
    (["trade", "--model", "{model}", "--max-position", "-5"], "positive number"),
])
def test_bad_input_is_one_error_line_and_exit_2(files, tmp_path, monkeypatch, capsys, argv, message):
    model, feed = files
    monkeypatch.chdir(tmp_path)
    argv = [a.format(model=model, feed=feed) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(tmp_path.rglob("*.sqlite*"))  # nothing half-made is left behind


def test_a_journal_of_another_session_is_refused_and_left_intact(files, replayed, tmp_path, capsys):
    model, feed = files
    journal, _ = replayed
    before = journal.read_bytes()
    other = rule_model(tmp_path / "other.pth", market_frame(seed=9))
    assert main(["trade", "--model", str(other), "--feed", str(feed), "--journal", str(journal)]) == 2
    assert "belongs to another session (model_sha256" in capsys.readouterr().err
    assert journal.read_bytes() == before
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["trade", "--model", str(model), "--feed", str(feed), "--journal", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a Nexlify trade journal" in capsys.readouterr().err
    other_db = tmp_path / "app.db"  # another program's SQLite database is not touched
    with sqlite3.connect(other_db) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    before = other_db.read_bytes()
    assert main(["trade", "--report", "--journal", str(other_db)]) == 2
    assert "not a Nexlify trade journal (it has no meta table)" in capsys.readouterr().err
    assert other_db.read_bytes() == before


def test_a_parquet_feed_replays_like_the_csv(files, backtest, tmp_path):
    model, feed = files
    parquet = write_feed(tmp_path / "feed.parquet", load_ohlcv(feed))
    stamps = load_ohlcv(feed).index.as_unit("ms").asi8
    clock = ReplayClock(int(stamps[WARMUP_BARS]), end_ms=int(stamps[WARMUP_BARS + 30]) + 3_600_000 + 2_000)
    run_trade(TradeOptions(model=model, feed=parquet, journal=tmp_path / "pq.sqlite"), out=lambda line: None,
              clock=clock)
    equity = [m["equity"] for m in _marks(tmp_path / "pq.sqlite")]
    np.testing.assert_array_equal(equity, backtest["agent"].equity[0][: len(equity)])
    assert len(equity) == 31


def test_an_ensemble_session_equals_the_ensembles_backtest_and_keeps_its_members(files, backtest, tmp_path, capsys):
    model, feed = files
    # Members of the same data (one scaler) that disagree: thresholds 0.5, 0.2 and 1.2.
    members = [model, rule_model(tmp_path / "eager.pth", market_frame(), threshold=0.2),
               rule_model(tmp_path / "patient.pth", market_frame(), threshold=1.2)]
    agents = [AdaptiveDQNAgent.from_checkpoint(path, device="cpu") for path in members]
    frame = load_ohlcv(feed)
    market = market_slice_from_frame(frame, FeatureScaler.from_dict(agents[0].checkpoint_metadata["scaler"]))
    ensemble = backtest_with_baselines(agents, market, periods_per_year(detect_timeframe(frame)), agents[0].config)
    assert ensemble["agent"].metrics["trades"] >= 4
    assert not np.array_equal(ensemble["agent"].equity, backtest["agent"].equity)  # not the first member alone
    journal = tmp_path / "ensemble.sqlite"
    argv = ["trade", "--model", *map(str, members), "--feed", str(feed), "--journal", str(journal)]
    assert main(argv) == 0
    _assert_equals_backtest(journal, ensemble)
    # `nexlify evaluate` backtests the same ensemble, into `evaluation_ensemble` beside the first model.
    assert main(["evaluate", "--model", *map(str, members), "--data", str(feed)]) == 0
    evaluated = json.loads((model.parent / "evaluation_ensemble" / "evaluation_results.json").read_text())
    assert evaluated["model"] == [str(m) for m in members]
    assert evaluated["test"]["agent"]["final_equity"] == pytest.approx(ensemble["agent"].metrics["final_equity"])
    assert "mean-Q ensemble of 3 models" in capsys.readouterr().out
    # The journal belongs to this set of members, in any order; another set is refused, the journal intact.
    assert main(["trade", "--model", *map(str, members[::-1]), "--feed", str(feed), "--journal", str(journal)]) == 0
    before = journal.read_bytes()
    assert main(["trade", "--model", *map(str, members[:2]), "--feed", str(feed), "--journal", str(journal)]) == 2
    assert "belongs to another session (model_sha256" in capsys.readouterr().err
    assert journal.read_bytes() == before


def test_an_ensemble_of_models_trained_on_other_data_is_refused(files, tmp_path, capsys):
    _, feed = files
    model = rule_model(tmp_path / "model.pth", market_frame())
    other = rule_model(tmp_path / "other.pth", market_frame(seed=9))  # another market: another scaler
    for command in ("trade", "evaluate"):
        extra = ["--feed", str(feed)] if command == "trade" else ["--data", str(feed)]
        assert main([command, "--model", str(model), str(other), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "trained on different data" in err[0], err
        assert main([command, "--model", str(model), str(model), *extra]) == 2
        assert "names the same file twice" in capsys.readouterr().err
    # Nothing half-made: no journal, no evaluation folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "other.pth"]
