"""The learning-levers screen: every lever on the same calendar folds, pooled training that ends before
every market's validation and test windows, and a smoke run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic_frame
from nexlify.config import config_keys
from nexlify.evaluation.fold_markets import market_splits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import learning_levers  # noqa: E402

SCRIPT = str(ROOT / "benchmarks" / "learning_levers.py")
ENV = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}


def _markets(folder: Path, rows: int = 2600, shift_days: int = 5) -> list[str]:
    """Two hourly markets whose histories only partly overlap (the second starts and ends later),
    like the shared markets (BTC runs to 2025, the others end in 2024)."""
    paths = []
    for seed, path in enumerate((folder / "AAAUSDT_1h.csv", folder / "BBBUSDT_1h.csv")):
        frame = synthetic_frame(rows, seed=seed, drift=0.0002)
        frame.index = frame.index + pd.Timedelta(days=seed * shift_days)
        frame.to_csv(path)
        paths.append(str(path))
    return paths


def test_every_lever_uses_the_same_calendar_folds_and_pooled_training_ends_before_every_test(tmp_path) -> None:
    paths = _markets(tmp_path, rows=24 * 120, shift_days=20)  # common period: 100 days
    budget = learning_levers.Budget(folds=2, seeds=2, train_days=30, validation_days=5, test_days=10,
                                    episodes=1, validations=1, parallel_envs=1)
    plans = {lever: learning_levers.lever_jobs(lever, paths, budget, tmp_path / "out")
             for lever in ("baseline", "trend", "pooled")}
    common_end = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=24 * 120)  # the first market's end
    calendar = {}  # lever -> its folds' windows (the plan numbers folds from the lever's first usable candle)
    for lever, jobs in plans.items():
        assert {job.seed for job in jobs} == {0, 1}
        assert all(Path(job.output_dir).is_relative_to(tmp_path / "out" / lever) for job in jobs)
        calendar[lever] = {tuple(asdict(job.windows).values())[1:] for job in jobs}
    # Every lever (trend's 30-day feature warm-up included) and market gets the same two calendar
    # windows: the plan's last two, tests back to back up to the end of the period both markets cover.
    assert calendar["baseline"] == calendar["trend"] == calendar["pooled"] and len(calendar["baseline"]) == 2
    before, last = sorted(calendar["baseline"])
    assert pd.Timestamp(last[-1]) == common_end and before[-1] == last[-2]
    assert pd.Timestamp(last[-2]) == common_end - pd.Timedelta(days=10)
    assert pd.Timestamp(before[0]) == pd.Timestamp(before[2]) - pd.Timedelta(days=30)  # train, then validation
    assert pd.Timestamp(before[0]) >= pd.Timestamp("2024-01-21", tz="UTC")  # inside the common period

    assert {job.market for job in plans["baseline"]} == {"AAAUSDT_1h", "BBBUSDT_1h"}
    pooled = plans["pooled"]
    assert len(pooled) == 4 and {job.market for job in pooled} == {"pooled"}
    assert plans["trend"][0].config_overrides["feature_set"] == "trend"
    for job in pooled:  # each pooled policy trains on both markets, and on no bar at or after any validation
        splits = market_splits(job, "basic")
        assert set(splits) == {"AAAUSDT_1h", "BBBUSDT_1h"}
        last_trained = max(s.train.timestamps.max() for s in splits.values())
        assert last_trained < min(s.validation.timestamps.min() for s in splits.values())
        assert last_trained < min(s.test.timestamps.min() for s in splits.values())


def test_random_windows_keep_the_transitions_and_too_many_folds_is_refused(tmp_path) -> None:
    budget = learning_levers.BUDGETS["standard"]
    # 8 passes over 180 days of hourly bars = 34,552 transitions = 48 episodes of 720 bars.
    assert learning_levers.lever_overrides("random_windows", budget)["episodes"] == 48
    # Pooled: a full pass walks the four markets' windows joined, so four times the random windows.
    assert learning_levers.lever_overrides("pooled_plan_penalty_quadruple_random", budget, 4)["episodes"] \
        == round(8 * (4 * 180 * 24 - 1) / 720) == 192
    assert learning_levers.lever_overrides("baseline", budget)["eval_interval"] == 2
    # Every job stores the whole configuration, so a later default change cannot reuse it unnoticed.
    assert set(learning_levers.lever_overrides("baseline", budget)) == set(config_keys())
    assert "pool" not in learning_levers.lever_overrides("pooled", budget)
    # Levers are measured against the defaults they were screened on (no switching penalty).
    assert learning_levers.lever_overrides("pooled", budget)["trade_penalty"] == 0.0
    assert learning_levers.lever_overrides("pooled_penalty", budget)["trade_penalty"] == 0.001
    # ... and the log-return reward, the default when they were screened, unless the lever names another.
    assert learning_levers.lever_overrides("pooled_plan_penalty_quadruple", budget)["reward_mode"] == "log_return"
    assert learning_levers.lever_overrides("pooled_plan_penalty_quadruple_dsr", budget)["reward_mode"] \
        == "differential_sharpe"
    # A lever's own run length replaces the budget's, and its validations are spaced over it.
    assert {k: learning_levers.lever_overrides("pooled_ep16", budget)[k] for k in ("episodes", "eval_interval")} \
        == {"episodes": 16, "eval_interval": 4}
    assert "train_days" not in learning_levers.lever_overrides("pooled_train365", budget)
    # The other-seeds lever trains the default base's configuration with seeds 3, 4 and 5.
    others = learning_levers.lever_jobs("pooled_plan_penalty_quadruple_seeds345", _markets(tmp_path),
                                        learning_levers.BUDGETS["smoke"], tmp_path / "seeds")
    assert sorted({job.seed for job in others}) == [3, 4]  # the smoke budget's two seeds
    assert "first_seed" not in others[0].config_overrides
    paths = _markets(tmp_path)
    result = subprocess.run([sys.executable, SCRIPT, "--smoke", "--folds", "9", "--levers", "baseline", "--data",
                             *paths, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert result.returncode == 2 and result.stderr.startswith("error: the markets' common period holds 2 fold(s)")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [(["--levers", "magic"], "error: unknown lever(s) magic"),
                                           (["--seeds", "0"], "error: --seeds, --folds")])
def test_bad_arguments_are_one_error_line(tmp_path, argv, message) -> None:
    result = subprocess.run([sys.executable, SCRIPT, *argv, "--data", *_markets(tmp_path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert result.returncode == 2 and result.stderr.startswith(message)


def test_smoke_run_prints_the_tables_and_writes_every_record(tmp_path) -> None:
    paths = _markets(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, SCRIPT, "--smoke", "--data", *paths, "--levers", "baseline,pooled",
                             "--episodes", "1", "--jobs", "2", "--out", str(out), "--held-out"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== pooled" in result.stdout and "== baseline" in result.stdout and "test excess Sharpe" in result.stdout
    saved = json.loads((out / "learning_levers.json").read_text())
    records = saved["records"]
    # 2 levers x 2 markets x 1 fold x 2 seeds, plus one ensemble per (lever, market); the pooled
    # lever trained one model per seed on both markets and is scored on each market on its own.
    expected = sorted((lever, market, name) for lever in ("baseline", "pooled")
                      for market in ("AAAUSDT_1h", "BBBUSDT_1h") for name in ("0", "1", "mean_q"))
    assert sorted((r["lever"], r["job"]["market"], r["job"].get("ensemble") or str(r["job"]["seed"]))
                  for r in records) == expected
    assert len(list(out.glob("pooled/pooled/fold_*/seed_*/best_model.pth"))) == 2
    assert not list(out.glob("pooled/AAAUSDT_1h"))
    # One calendar window per fold for both levers and markets.
    assert len({json.dumps(row["windows"]) for lever in saved["folds"].values() for row in lever}) == 1
    for r in records:
        for part in ("validation_backtest", "test"):
            assert {"agent", "buy_and_hold", "ma_crossover", "cash"} <= set(r[part])
            assert r[part]["cash"]["total_return"] == 0.0
        assert r["rows"]["validation"] == r["rows"]["test"] == 15 * 24  # the smoke budget's windows
    # Paired on validation: pooled minus baseline on the same (market, window), computed by hand.
    assert saved["paired"]["reference"] == "baseline" and "== paired against baseline" in result.stdout

    def excess(lever: str, market: str, ensemble: bool) -> float:
        views = [r["validation_backtest"] for r in records if r["lever"] == lever and r["job"]["market"] == market
                 and bool(r["job"].get("ensemble")) == ensemble]
        return float(np.mean([v["agent"]["sharpe"] - v["buy_and_hold"]["sharpe"] for v in views]))

    for ensemble, name in ((False, "seeds"), (True, "ensemble")):
        diffs = [excess("pooled", m, ensemble) - excess("baseline", m, ensemble) for m in ("AAAUSDT_1h", "BBBUSDT_1h")]
        paired = saved["paired"]["levers"]["pooled"][name]
        assert paired["n"] == 2 and paired["mean"] == pytest.approx(np.mean(diffs))
        assert paired["better"] == sum(d > 0 for d in diffs)
    # The held-out lens: each fold's best-model ensemble chosen on one validation half and scored on the
    # other, both ways round, as benchmarks/model_choice.py computes it from the same stored snapshots.
    import model_choice

    def held_out(lever: str) -> dict[str, float]:
        values = {}
        for members in model_choice.fold_groups(out / lever):
            for record in model_choice.fold_study(members):
                nested = record["nested"]["best"]
                values[record["market"]] = (nested["first_to_second"] + nested["second_to_first"]) / 2
        return values

    mine, theirs = held_out("pooled"), held_out("baseline")
    diffs = [mine[m] - theirs[m] for m in ("AAAUSDT_1h", "BBBUSDT_1h")]
    paired = saved["paired"]["levers"]["pooled"][learning_levers.HELD_OUT_LENS]
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(np.mean(diffs))
    assert "best, held-out halves: val excess diff" in result.stdout
    for lever in ("baseline", "pooled"):
        summary, verdict = saved["summaries"][lever], saved["verdicts"][lever]
        assert summary["seeds"]["n"] == 4 and summary["ensemble_mean_q"]["n"] == 2
        seeds = [r for r in records if r["lever"] == lever and not r["job"].get("ensemble")]
        by_hand = np.mean([r["validation_backtest"]["agent"]["sharpe"] - r["validation_backtest"]["buy_and_hold"]
                           ["sharpe"] for r in seeds])
        assert summary["seeds"]["validation_excess_sharpe"] == pytest.approx(by_hand)
        # The ensemble rows are the walk-forward verdict's folds (its policy judged is the ensemble).
        ensemble = summary["ensemble_mean_q"]
        assert ensemble["test_win_vs_bh"] == verdict["beats_buy_and_hold"] / verdict["folds"]
        assert ensemble["test_excess_sharpe"] == pytest.approx(verdict["mean_excess_sharpe"])
        assert ensemble["validation_excess_sharpe"] == pytest.approx(verdict["mean_validation_excess_sharpe"])
        assert f"verdict: {verdict['sentence']}" in result.stdout

    # ensemble_members.py rebuilds the pooled lever's ensembles from the same models: its 2-seed set of
    # best models is the walk-forward's ensemble, to the digit.
    members = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ensemble_members.py"), "--lever", "pooled",
                              "--budget", "smoke", "--data", *paths, "--out", str(out), "--sets", "best:1", "best:2",
                              "last:2", "--combine", "mean_q", "portfolio"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert members.returncode == 0, members.stderr[-3000:]
    row = next(line.split() for line in members.stdout.splitlines() if line.strip().startswith("best:2"))
    assert row[1] == "2" and float(row[2]) == pytest.approx(excess("pooled", "AAAUSDT_1h", True) / 2
                                                            + excess("pooled", "BBBUSDT_1h", True) / 2, abs=0.006)
    assert "vs best:1, " in members.stdout and "last:2" in members.stdout
    # Another combination is paired against the same members combined the reference way.
    assert "best:2/portfolio" in members.stdout and "vs best:2, " in members.stdout


def test_paired_lenses_compare_the_same_windows_and_the_unselected_last_checkpoint() -> None:
    from types import SimpleNamespace

    def view(market: str, window: str, seed: int, agent: float, hold: float, history: list[float],
             ensemble: str | None = None) -> dict:
        job = {"market": market, "validation_start": window, "seed": seed, "pooled": True, "ensemble": ensemble}
        return {"job": job, "validation_backtest": {"agent": {"sharpe": agent}, "buy_and_hold": {"sharpe": hold}},
                "validation": None if ensemble else {"history": [{"score": s} for s in history]}}

    reference = SimpleNamespace(outcomes=[
        view("A", "w1", 0, 1.0, 0.5, [0.0, 2.0, 0.2]), view("A", "w1", 1, 0.0, 0.5, [0.0, 2.0, -0.4]),
        view("A", "w2", 0, 2.0, 1.0, [1.0, 1.5]), view("A", "w1", 0, 0.4, 0.5, [], ensemble="mean_q")])
    lever = SimpleNamespace(outcomes=[
        view("A", "w1", 0, 2.0, 0.5, [0.0, 1.0, 1.2]), view("A", "w1", 1, 1.0, 0.5, [0.0, 1.0, 0.6]),
        view("A", "w2", 0, 1.0, 1.0, [1.0, 0.5]), view("A", "w1", 0, 0.9, 0.5, [], ensemble="mean_q"),
        view("A", "w3", 0, 9.0, 0.0, [9.0])])  # a window the reference lacks is not paired
    _, paired = learning_levers.paired_against({"ref": reference, "lever": lever}, "ref")
    out = paired["lever"]
    # Seeds' mean excess per window: w1 1.0 vs 0.0, w2 0.0 vs 1.0 -> diffs +1.0, -1.0.
    assert out["seeds"]["n"] == 2 and out["seeds"]["mean"] == pytest.approx(0.0) and out["seeds"]["better"] == 1
    # t interval over the two windows: mean 0, sd sqrt(2), standard error 1, t(1) quantile 12.706.
    assert out["seeds"]["t_ci"] == pytest.approx([-12.706, 12.706])
    assert out["ensemble"]["n"] == 1 and out["ensemble"]["mean"] == pytest.approx(0.5)
    # Last checkpoints, seeds' mean per window: w1 (1.2 + 0.6) / 2 - (0.2 - 0.4) / 2 = 1.0, w2 0.5 - 1.5.
    last = out["last checkpoint"]
    assert last["n"] == 2 and last["mean"] == pytest.approx((1.0 - 1.0) / 2) and last["better"] == 1
    # Every checkpoint, each run's mean then the seeds': w1 lever (2.2/3 + 1.6/3) / 2, reference
    # (2.2/3 + 1.6/3) / 2 -> 0; w2 lever 0.75, reference 1.25 -> -0.5.
    every = out["every checkpoint"]
    assert every["n"] == 2 and every["mean"] == pytest.approx((0.0 - 0.5) / 2) and every["better"] == 0
    # Two runs of the reference (other seeds) are averaged per window, on the windows both have.
    other = SimpleNamespace(outcomes=[
        view("A", "w1", 3, 3.0, 0.5, [0.0, 0.8]), view("A", "w1", 0, 1.4, 0.5, [], ensemble="mean_q")])
    text, paired = learning_levers.paired_against({"ref": reference, "other": other, "lever": lever}, ["ref", "other"])
    out = paired["lever"]
    assert set(paired) == {"lever"} and "paired against ref+other" in text
    # w1 only: seeds 1.0 - mean(0.0, 2.5); ensemble 0.4 - mean(-0.1, 0.9); last 0.9 - mean(-0.1, 0.8).
    assert out["seeds"]["n"] == 1 and out["seeds"]["mean"] == pytest.approx(1.0 - 1.25)
    assert out["ensemble"]["mean"] == pytest.approx(0.4 - 0.4)
    assert out["last checkpoint"]["mean"] == pytest.approx(0.9 - 0.35)


def test_a_portfolio_ensemble_is_its_members_each_trading_an_equal_share() -> None:
    import ensemble_members

    from helpers import random_walk_slice
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.backtest import agent_policy, run_policy

    market = random_walk_slice(300, seed=4)
    members = [AdaptiveDQNAgent(12, 3, TrainingConfig(model_size="tiny", seed=s)) for s in (1, 2, 5)]
    alone = [run_policy(market, agent_policy(m), "agent", 8760.0, fee=0.001, slippage=0.0005) for m in members]
    assert len({round(r.equity[0, -1], 6) for r in alone}) == 3 and all(r.metrics["trades"] > 0 for r in alone)
    both = ensemble_members.portfolio_backtest(members, market, 8760.0, initial_balance=10_000.0, fee=0.001,
                                               slippage=0.0005)
    # A third of the capital each: the portfolio's growth is the members' mean growth, its fills theirs.
    assert both["total_return"] == pytest.approx(np.mean([r.metrics["total_return"] for r in alone]))
    assert both["trades"] == sum(r.metrics["trades"] for r in alone)
    assert both["fees_paid"] == pytest.approx(np.mean([r.metrics["fees_paid"] for r in alone]))
    # One member is that member on its own.
    one = ensemble_members.portfolio_backtest(members[:1], market, 8760.0, fee=0.001, slippage=0.0005)
    assert one["sharpe"] == pytest.approx(alone[0].metrics["sharpe"])
    assert one["max_drawdown"] == pytest.approx(alone[0].metrics["max_drawdown"])


def test_validation_transfer_correlates_each_levers_lead_within_a_window(tmp_path, capsys) -> None:
    import validation_transfer

    def outcome(lever: str, window: str, seed: int, val: float, test: float, pooled: bool) -> None:
        view = {"validation_backtest": {"agent": {"sharpe": val + 1.0}, "buy_and_hold": {"sharpe": 1.0}},
                "test": {"agent": {"sharpe": test - 2.0}, "buy_and_hold": {"sharpe": -2.0}}}
        job = {"validation_start": window, "market": "pooled" if pooled else "AAA"}
        body = {"job": job, "markets": {"AAA": view}} if pooled else {"job": job, **view}
        path = tmp_path / lever / job["market"] / window / f"seed_{seed}" / "fold_outcome.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(body))

    # Window w1 (one market per job): excess on validation 1, 2, 3 and on test 0.5, 0, 1 (lever C's two
    # seeds average to it). Window w2 (pooled jobs): validation 0, 0, 3, test 1, 2, 3. Window w3 has
    # only two levers: left out.
    for lever, val, test in (("A", 1.0, 0.5), ("B", 2.0, 0.0)):
        outcome(lever, "w1", 0, val, test, pooled=False)
    outcome("C", "w1", 0, 2.0, 0.0, pooled=False)
    outcome("C", "w1", 1, 4.0, 2.0, pooled=False)
    for lever, val, test in (("A", 0.0, 1.0), ("B", 0.0, 2.0), ("C", 3.0, 3.0)):
        outcome(lever, "w2", 0, val, test, pooled=True)
    for lever in ("A", "B"):
        outcome(lever, "w3", 0, 5.0, 5.0, pooled=False)
    effects = validation_transfer.lever_effects(tmp_path, "fold_outcome.json")
    # Centred per window: w1 validation -1, 0, 1 and test 0, -0.5, 0.5; w2 -1, -1, 2 and -1, 0, 1.
    assert sorted(effects) == sorted([("w1", -1.0, 0.0), ("w1", 0.0, -0.5), ("w1", 1.0, 0.5),
                                      ("w2", -1.0, -1.0), ("w2", -1.0, 0.0), ("w2", 2.0, 1.0)])
    # Ranks by hand (ties share their mean rank): validation [1, 3, 4, 1, 1, 5], test [2.5, 1, 4, 0, 2.5, 5]
    # in the order (w1 A, B, C, w2 A, B, C).
    by_hand = np.corrcoef([1, 3, 4, 1, 1, 5], [2.5, 1, 4, 0, 2.5, 5])[0, 1]
    rho, low, high = validation_transfer.transfer(effects)
    assert rho == pytest.approx(by_hand) and low <= rho <= high
    # Lever C's ensemble of its two seeds on w1: excess 5 on validation and 1 on test, against its
    # seeds' means (2 + 4) / 2 = 3 and (0 + 2) / 2 = 1: gains +2 and 0.
    (tmp_path / "C" / "AAA" / "w1" / "ensemble_mean_q.json").write_text(json.dumps({
        "job": {"validation_start": "w1", "market": "AAA", "seeds": [0, 1], "ensemble": "mean_q"},
        "validation_backtest": {"agent": {"sharpe": 5.0}, "buy_and_hold": {"sharpe": 0.0}},
        "test": {"agent": {"sharpe": 1.0}, "buy_and_hold": {"sharpe": 0.0}}}))
    assert validation_transfer.ensemble_gains(tmp_path) == [("w1", 2.0, 0.0)]
    assert validation_transfer.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"{by_hand:+.2f}" in printed
    gain_rows = {line.split()[0]: line.split() for line in printed.splitlines()[-2:]}
    assert gain_rows["validation"][1:3] == ["1", "+2.00"] and gain_rows["validation"][-1] == "1/1"
    assert gain_rows["test"][1:3] == ["1", "+0.00"] and gain_rows["test"][-1] == "0/1"
    assert validation_transfer.main(["--out", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: --out")


def test_pair_walkforwards_pairs_two_runs_with_the_three_lenses(tmp_path, capsys) -> None:
    import pair_walkforwards

    def run(name: str, seeds: list[tuple[float, float]], ensemble: float, all_snapshots: float,
            first_seed: int = 0, validation_start: str = "2024-01-01") -> Path:
        folder = tmp_path / name
        window = {"market": "AAA", "fold": 1, "validation_start": validation_start}
        for seed, (excess, last_score) in enumerate(seeds, start=first_seed):
            path = folder / "AAA" / "fold_01" / f"seed_{seed}" / "fold_outcome.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({
                "job": {**window, "seed": seed},
                "validation": {"history": [{"score": 9.0}, {"score": last_score}]},
                "validation_backtest": {"agent": {"sharpe": excess + 1.0}, "buy_and_hold": {"sharpe": 1.0}}}))
        (folder / "AAA" / "fold_01" / "ensemble_mean_q.json").write_text(json.dumps({
            "job": {**window, "seed": 0, "seeds": [0, 1], "ensemble": "mean_q"},
            "validation_backtest": {"agent": {"sharpe": ensemble}, "buy_and_hold": {"sharpe": 0.0}}}))
        # The same folds judged again with --model-choice all: another ensemble file beside the first.
        (folder / "AAA" / "fold_01" / "ensemble_mean_q_all.json").write_text(json.dumps({
            "job": {**window, "seed": 0, "seeds": [0, 1], "ensemble": "mean_q", "model_choice": "all"},
            "validation_backtest": {"agent": {"sharpe": all_snapshots}, "buy_and_hold": {"sharpe": 0.0}}}))
        (folder / "walkforward_results.json").write_text("{}")
        return folder

    # Seeds' excess 1 and 0 against 2 and 1: +1.00; ensembles 0.5 against 0: -0.50; last validation
    # scores 0.2 and 0.4 against 0.9 and 0.7: +0.50 (the best score, 9, is the selected one: ignored).
    # The `all` ensembles, 3 against 1: -2.00, paired only when asked for, never mixed into `best`'s.
    first = run("first", [(1.0, 0.2), (0.0, 0.4)], 0.5, 3.0)
    second = run("second", [(2.0, 0.9), (1.0, 0.7)], 0.0, 1.0)

    def cells(*flags: str) -> list[str]:
        assert pair_walkforwards.main([str(first), str(second), *flags]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(str(second)))
        return row.split()  # per lens: mean, bootstrap [lo, hi], "t", t [lo, hi], better

    best = cells()
    assert best[1] == "+1.00" and best[7] == "1/1"
    assert best[8] == "-0.50" and best[14] == "0/1"
    assert best[15] == "+0.50" and best[21] == "1/1"
    every = cells("--model-choice", "all")
    assert every[8] == "-2.00" and every[1] == "+1.00"
    assert pair_walkforwards.main([str(first), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no finished walk-forward" in err and len(err.strip().splitlines()) == 1
    assert pair_walkforwards.main([str(first), str(second), str(first / ".." / "first")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "more than once" in err and len(err.strip().splitlines()) == 1

    # The second configuration again with seeds 2-3, joined to its first run: every lens averages the
    # four seeds (and the two ensembles). Seeds' excess (2 + 1 + 3 + 2) / 4 = 2.0 against 0.5: +1.50;
    # ensembles (0 + 2) / 2 = 1.0 against 0.5: +0.50; last scores (0.9 + 0.7 + 0.1 + 0.3) / 4 = 0.5
    # against 0.3: +0.20.
    again = run("again", [(3.0, 0.1), (2.0, 0.3)], 2.0, 1.0, first_seed=2)
    assert pair_walkforwards.main([str(first), f"{second},{again}"]) == 0
    joined = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(f"{second},"))
    joined_cells = joined.split()
    assert joined_cells[1] == "+1.50" and joined_cells[8] == "+0.50" and joined_cells[15] == "+0.20"
    # Runs that share a seed would count the same jobs twice; runs over other windows are another layout.
    same_seed = run("same_seed", [(0.0, 0.0)], 0.0, 0.0, first_seed=1)
    other_windows = run("other_windows", [(0.0, 0.0)], 0.0, 0.0, first_seed=5, validation_start="2024-02-01")
    for bad, message in ((same_seed, "repeats seed(s) [1]"), (other_windows, "other validation windows")):
        assert pair_walkforwards.main([str(first), f"{second},{bad}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def _view(market: str, fold: int, exposure: float, validation_trend: float, test_sharpe: float) -> dict:
    metrics = {"sharpe": 0.0, "max_drawdown": 0.2, "exposure": 1.0, "trades": 2, "steps": 2160, "total_return": 0.0}
    return {"job": {"market": market, "fold": fold, "test_start": f"2024-0{fold}-01"}, "periods_per_year": 8760.0,
            "validation_backtest": {"agent": {**metrics, "sharpe": 1.0},
                                    "buy_and_hold": {**metrics, "total_return": validation_trend}},
            "test": {"agent": {**metrics, "sharpe": test_sharpe, "exposure": exposure, "max_drawdown": 0.1},
                     "buy_and_hold": metrics, "ma_crossover": {**metrics, "sharpe": -1.0}}}


def test_summary_reports_the_time_long_and_how_it_follows_the_validation_trend() -> None:
    views = [_view("A", 1, 0.9, 0.2, 1.0), _view("B", 1, 0.7, 0.1, -1.0), _view("A", 2, 0.1, -0.2, 0.5),
             _view("B", 2, 0.3, -0.1, 0.5)]
    s = learning_levers.summarize(views)
    assert s["test_exposure"] == pytest.approx(0.5)
    # Exposure deviations (0.4, 0.2, -0.4, -0.2) against trends (0.2, 0.1, -0.2, -0.1): exactly linear.
    assert s["exposure_follows_validation"] == pytest.approx(1.0)
    assert s["test_win_vs_bh"] == pytest.approx(0.75) and s["test_win_vs_ma"] == pytest.approx(0.75)  # -1 ties MA
    assert s["test_excess_sharpe"] == pytest.approx(0.25) and s["validation_excess_sharpe"] == 1.0
    assert math.isnan(learning_levers.correlation(np.ones(3), np.arange(3.0)))


def _pooled_walkforward(folder: Path, first_seed: int) -> Path:
    """A finished tiny pooled walk-forward: two markets, three folds, two seeds."""
    from nexlify.cli import main

    files = [folder / "AAA_1h.csv", folder / "BBB_1h.csv"]
    for seed, path in enumerate(files, start=1):
        if not path.exists():
            synthetic_frame(24 * 15, seed=seed).to_csv(path)
    run = folder / f"wf_{first_seed}"
    argv = ["walkforward", "--data", *map(str, files), "--train-days", "4", "--validation-days", "2", "--folds",
            "3", "--seeds", "2", "--seed", str(first_seed), "--episodes", "2", "--model-size", "tiny", "--jobs",
            "1", "--quiet", "--model-choice", "best", "--checkpoint-dir", str(run)]  # carry_folds reads best's
    assert main(argv) == 0
    return run


def test_carry_folds_rebuilds_the_fold_ensemble_and_adds_the_fold_befores_seeds(tmp_path, capsys):
    import carry_folds

    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.fold_markets import load_market
    from nexlify.evaluation.folds import fold_splits
    from nexlify.evaluation.walkforward import FoldJob

    first, second = _pooled_walkforward(tmp_path, 1), _pooled_walkforward(tmp_path, 3)
    capsys.readouterr()
    out = tmp_path / "rows.json"
    # main() asserts that its `fold` set on the best models equals the walk-forward's stored ensemble.
    assert carry_folds.main([str(first), "--other", str(second), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== last models" in printed and "== best models" in printed
    rows = json.loads(out.read_text())
    for lens in ("last", "best"):
        assert sorted((r["fold"], r["market"]) for r in rows[lens]) == [
            (f, m) for f in (1, 2, 3) for m in ("AAA_1h", "BBB_1h")]
        # Fold 1 has no fold before it; every fold has the other run's seeds.
        assert all(("carry_test" in r) == (r["fold"] > 1) and "wide_test" in r for r in rows[lens])

    # One member fed its own fold's features backtests exactly as the walk-forward did: the stored
    # validation Sharpe of seed 1's best model on fold 2.
    folds = carry_folds.fold_seed_dirs(first)
    job_dict, seed_dir = folds[2][0]
    job = FoldJob.from_dict(job_dict)
    stored = json.loads((seed_dir / "fold_outcome.json").read_text())["markets"]["AAA_1h"]
    agent = AdaptiveDQNAgent.from_checkpoint(seed_dir / "best_model.pth", device="cpu")
    config = TrainingConfig().with_overrides({**job.config_overrides, "data_days": None})
    frame = load_market(str(tmp_path / "AAA_1h.csv"))
    splits = fold_splits(frame, job.windows, source="AAA_1h", feature_set=config.feature_set)
    metrics = carry_folds.ensemble_backtest([agent], [splits.validation.features], splits.validation, splits, config)
    assert metrics["sharpe"] == pytest.approx(stored["validation_backtest"]["agent"]["sharpe"])
    # Fold 1's scaler, fitted on fold 1's training rows, is not fold 2's.
    own = carry_folds.member_scaler(frame, FoldJob.from_dict(folds[1][0][0]).windows, config.feature_set, None)
    assert not np.allclose(own.mean, splits.scaler.mean)
    # A fold whose training window the market does not reach back to falls back to the judged fold's.
    early = replace(job.windows, train_start="2000-01-01T00:00:00+00:00", train_end="2000-01-05T00:00:00+00:00")
    assert carry_folds.member_scaler(frame, early, config.feature_set, splits.scaler) is splits.scaler

    assert carry_folds.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no pooled fold outcomes" in err and len(err.strip().splitlines()) == 1
