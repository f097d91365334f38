"""Walk-forward: windows that never leak, a scaler fitted on training rows, hand-checked baselines,
an honest verdict, resume, the parallel plan and the command line."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import make_slice, random_walk_slice, synthetic_frame, tiny_config
from nexlify.cli import main
from nexlify.config import TrainingConfig
from nexlify.data.features import WARMUP_BARS, FeatureScaler, compute_market_features, warmup_bars
from nexlify.data.market import load_ohlcv
from nexlify.env.trading import BUY, SELL
from nexlify.errors import CheckpointError, ConfigError, DataError
from nexlify.evaluation.backtest import (
    buy_and_hold_policy,
    cash_policy,
    moving_average_policy,
    random_policy,
    run_policy,
)
from nexlify.evaluation.folds import fold_splits, plan_folds
from nexlify.evaluation.report import single_window_verdict
from nexlify.evaluation.verdict import bootstrap_mean_ci, cluster_t_interval, regime, t_quantile_975
from nexlify.evaluation.walkforward import (
    OUTCOME_FILE,
    FoldJob,
    aggregate,
    finished_outcome,
    parallel_plan,
    plan_jobs,
    run_fold_job,
    run_walkforward,
)
from nexlify.evaluation.walkforward_report import aggregate_lines, fold_table, write_report_png

HOUR = pd.Timedelta(hours=1)


def _frame(rows, seed=0):
    return load_ohlcv(synthetic_frame(rows, seed=seed))
FEE, SLIPPAGE, START = 0.001, 0.0005, 10_000.0


@pytest.mark.parametrize("kwargs", [dict(test_days=5), dict(folds=3), dict(test_days=4, anchored=True)])
def test_test_windows_never_overlap_their_training_or_each_other(kwargs):
    frame = _frame(24 * 45)
    windows = plan_folds(frame, train_days=10, validation_days=4, **kwargs)
    assert len(windows) >= 3
    for w in windows:
        assert w.train_start < w.train_end <= w.validation_start < w.validation_end <= w.test_start < w.test_end
        splits = fold_splits(frame, w)
        assert splits.train.timestamps.max() < splits.validation.timestamps.min()
        assert splits.validation.timestamps.max() < splits.test.timestamps.min()
    for earlier, later in zip(windows, windows[1:], strict=False):
        assert earlier.test_end == later.test_start  # back to back: no overlap, no hole
    assert pd.Timestamp(windows[-1].test_end) == frame.index[-1] + HOUR  # the tail of the history
    if kwargs.get("anchored"):
        assert len({w.train_start for w in windows}) == 1
    else:
        assert len({w.train_start for w in windows}) == len(windows)


def test_each_folds_scaler_sees_only_its_training_rows():
    frame = _frame(24 * 30, seed=3)
    window = plan_folds(frame, train_days=10, validation_days=4, test_days=5)[1]
    train_rows = frame.loc[(frame.index >= window.train_start) & (frame.index < window.train_end)]
    first = frame.index.get_loc(train_rows.index[0])
    by_hand = FeatureScaler().fit(compute_market_features(frame.iloc[first - WARMUP_BARS:first + len(train_rows)])
                                  [WARMUP_BARS:])
    scaler = fold_splits(frame, window).scaler
    np.testing.assert_allclose(scaler.mean, by_hand.mean, rtol=1e-9)
    np.testing.assert_allclose(scaler.std, by_hand.std, rtol=1e-9)
    # Wild prices after the training window (and long before it) change nothing.
    changed = frame.copy()
    outside = (changed.index >= window.train_end) | (changed.index < frame.index[first - WARMUP_BARS])
    changed.loc[outside, ["open", "high", "low", "close"]] *= np.linspace(1, 50, outside.sum())[:, None]
    changed.loc[outside, "volume"] *= 1000
    again = fold_splits(changed, window).scaler
    np.testing.assert_allclose(again.mean, scaler.mean, rtol=1e-9)
    np.testing.assert_allclose(again.std, scaler.std, rtol=1e-9)


def test_fold_splits_scale_with_a_given_fitted_scaler_instead_of_fitting_one(tmp_path):
    frame = _frame(24 * 30, seed=3)
    window = plan_folds(frame, train_days=10, validation_days=4, test_days=5)[1]
    own = fold_splits(frame, window)
    # Its own scaler handed back gives the same rows; an unclipped copy shifted by one std gives them minus 1.
    same = fold_splits(frame, window, scaler=own.scaler)
    np.testing.assert_array_equal(same.test.features, own.test.features)
    assert same.scaler is own.scaler
    wide = FeatureScaler(own.scaler.mean, own.scaler.std, clip=1e9)
    shifted = FeatureScaler(own.scaler.mean + own.scaler.std, own.scaler.std, clip=1e9)
    np.testing.assert_allclose(fold_splits(frame, window, scaler=shifted).validation.features,
                               fold_splits(frame, window, scaler=wide).validation.features - 1.0, atol=1e-5)


def _sharpe(equity, ppy=8760.0):
    returns = [b / a - 1 for a, b in zip(equity, equity[1:], strict=False)]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    return mean / std * math.sqrt(ppy)


def test_buy_and_hold_and_cash_numbers_by_hand():
    market = make_slice([100, 100, 105, 95], close_prices=[100, 105, 95, 120])
    costs = dict(initial_balance=START, fee=FEE, slippage=SLIPPAGE)
    hold = run_policy(market, buy_and_hold_policy, "buy_and_hold", 8760.0, **costs).metrics
    units = START / (1 + FEE) / (100 * (1 + SLIPPAGE))  # bought at the next candle's open
    equity = [START, units * 105, units * 95, units * 120]
    assert hold["final_equity"] == pytest.approx(units * 120)
    assert hold["total_return"] == pytest.approx(units * 120 / START - 1)
    assert hold["max_drawdown"] == pytest.approx(1 - 95 / 105)
    assert hold["sharpe"] == pytest.approx(_sharpe(equity))
    assert hold["fees_paid"] == pytest.approx(START / (1 + FEE) * FEE)
    assert hold["trades"] == 1 and hold["exposure"] == 1.0
    cash = run_policy(market, cash_policy, "cash", 8760.0, **costs).metrics
    assert (cash["total_return"], cash["sharpe"], cash["trades"], cash["fees_paid"]) == (0.0, 0.0, 0, 0.0)


def test_moving_average_crossover_by_hand():
    close = np.array([10, 10, 10, 12, 14, 13, 11, 9], dtype=float)
    opens = np.concatenate([[10.0], close[:-1]])
    market = make_slice(opens, close_prices=close)
    # fast 2 > slow 3 at t = 3, 4, 5: buy decided at t=3 (filled at open[4] = 12), sell at t=6 (open[7] = 11).
    result = run_policy(market, moving_average_policy(close, fast=2, slow=3), "ma", 8760.0,
                        initial_balance=START, fee=FEE, slippage=SLIPPAGE)
    units = START / (1 + FEE) / (12 * (1 + SLIPPAGE))
    final = units * 11 * (1 - SLIPPAGE) * (1 - FEE)
    np.testing.assert_array_equal(result.position[0], [0, 0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_allclose(result.equity[0], [START] * 4 + [units * 14, units * 13, units * 11, final])
    assert result.metrics["trades"] == 2
    assert result.metrics["exposure"] == pytest.approx(3 / 7)


def _outcome(market, fold, seed, agent, baselines):
    start = 3 * fold  # each fold its own calendar windows
    days = [f"2024-01-{start + d:02d}T00:00:00+00:00" for d in (1, 2, 2, 3, 3, 4)]
    job = FoldJob(fold, *days, market=market, data=None, seed=seed)
    tests = {"agent": agent, **baselines}
    return {"job": job.to_dict(), "validation": {}, "periods_per_year": 8760.0,
            "test": {k: v.metrics for k, v in tests.items()},
            "equity": {k: v.equity.mean(axis=0).tolist() for k, v in tests.items()}}


def _outcomes(agent_policy_for, folds=8, seeds=2):
    outcomes = []
    for fold in range(1, folds + 1):
        market = random_walk_slice(200, seed=100 + fold)
        baselines = {name: run_policy(market, policy, name, 8760.0) for name, policy in (
            ("buy_and_hold", buy_and_hold_policy), ("cash", cash_policy), ("random", random_policy(0)),
            ("ma_crossover", moving_average_policy(market.close)))}
        for seed in range(seeds):
            agent = run_policy(market, agent_policy_for(market, fold * 10 + seed), "agent", 8760.0)
            outcomes.append(_outcome("walk", fold, seed, agent, baselines))
    return outcomes


def test_verdict_says_no_evidence_for_a_random_policy_on_a_random_walk():
    result = aggregate(_outcomes(lambda market, seed: random_policy(seed)))
    assert "no evidence of an edge over buy-and-hold at 95%" in result.verdict
    assert result.overall["folds"] == 8 and result.overall["seeds"] == 2
    low, high = result.overall["excess_sharpe_ci"]
    assert low <= result.overall["mean_excess_sharpe"] <= high


def test_verdict_finds_an_edge_that_is_really_there():
    def oracle(market, _seed):  # looks one candle ahead: long exactly when the next candle rises
        rises = np.append(market.close[1:] > market.open[1:], False)  # an action fills at the next open
        return lambda obs, t: np.full(len(obs), BUY if rises[t] else SELL)

    result = aggregate(_outcomes(oracle))
    assert result.overall["excess_sharpe_ci"][0] > 0
    assert "no evidence" not in result.verdict and "evidence of an edge" in result.verdict
    assert result.overall["beats_buy_and_hold"] == 8


def test_bootstrap_interval_and_regimes():
    assert bootstrap_mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    low, high = bootstrap_mean_ci([-1.0, 1.0])
    assert (low, high) == (-1.0, 1.0)  # resamples of two values have means -1, 0 or 1
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0]))
    # Clusters are drawn whole. Two clusters of three: the mean is -1, 0 or +1, each end 1/4 likely.
    values, labels = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0], "aaabbb"
    assert bootstrap_mean_ci(values, clusters=labels) == (-1.0, 1.0)
    assert bootstrap_mean_ci(values)[0] > -1.0  # as six independent values, all six -1 is a 1/64 draw
    # Unequal clusters weigh by their size: {3} and {0, 0} give 3, 1 (either mixed order) or 0.
    assert bootstrap_mean_ci([3.0, 0.0, 0.0], clusters=["x", "y", "y"]) == (0.0, 3.0)
    assert bootstrap_mean_ci(values, clusters=range(6)) == bootstrap_mean_ci(values)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0, 2.0], clusters=["same", "same"]))
    with pytest.raises(ValueError, match="2 cluster labels for 3 values"):
        bootstrap_mean_ci([1.0, 2.0, 3.0], clusters=["a", "b"])


def test_fold_rows_report_the_time_the_agent_spent_long():
    always_long = aggregate(_outcomes(lambda market, seed: lambda obs, t: np.full(len(obs), BUY), folds=3))
    never_long = aggregate(_outcomes(lambda market, seed: lambda obs, t: np.full(len(obs), SELL), folds=3))
    # Always long holds from the first fill to the end, as buy-and-hold does; never long holds cash.
    hold = [r["baselines"]["buy_and_hold"]["exposure"] for r in always_long.folds]
    assert [r["agent_exposure"] for r in always_long.folds] == pytest.approx(hold) and min(hold) > 0.99
    assert [r["agent_exposure"] for r in never_long.folds] == [0.0, 0.0, 0.0]
    assert always_long.overall["exposure"] == pytest.approx(np.mean(hold)) and never_long.overall["exposure"] == 0.0
    text = "\n".join(aggregate_lines(never_long.overall))
    assert "mean position 0% (the share of the time long when positions are all-in; buy-and-hold: 100%)" in text
    assert fold_table(never_long.folds).splitlines()[1].split()[-3] == "0%"  # then: best baseline (Sharpe)
    # Holding the whole window is level with buy-and-hold, which the report says apart from losing to it.
    level = [abs(r["excess_sharpe"]) < 0.01 for r in always_long.folds]
    assert always_long.overall["level_with_buy_and_hold"] == sum(level) >= 2
    assert [r["level_with_buy_and_hold"] for r in always_long.folds] == level
    assert f"(level with it, within 0.01: {sum(level)})" in "\n".join(aggregate_lines(always_long.overall))
    cash_level = sum(abs(r["baselines"]["buy_and_hold"]["sharpe"]) < 0.01 for r in never_long.folds)
    assert never_long.overall["level_with_buy_and_hold"] == cash_level


def test_cluster_t_interval_by_hand():
    # Equal clusters: the t interval over the cluster means. a: (1, 3) -> 2, b: (4, 4) -> 4, c: (5, 7) -> 6;
    # mean 4, sd 2, se 2 / sqrt(3), t(2) = 4.303.
    half = 4.303 * 2.0 / 3**0.5
    assert cluster_t_interval([1.0, 3.0, 4.0, 4.0, 5.0, 7.0], "aabbcc") == pytest.approx((4.0 - half, 4.0 + half))
    # Unequal clusters (CR1), centred on the mean of all values 3.5: summed deviations a -3, b 0.5,
    # c 2.5; variance 3/2 * 15.5 / 4**2.
    half = 4.303 * (1.5 * 15.5 / 16) ** 0.5
    assert cluster_t_interval([1.0, 3.0, 4.0, 6.0], "aabc") == pytest.approx((3.5 - half, 3.5 + half))
    # Without labels: the ordinary t interval (sd of 1, 2, 3 is 1; t(2)).
    assert cluster_t_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0 - 4.303 / 3**0.5, 2.0 + 4.303 / 3**0.5))
    assert all(math.isnan(v) for v in cluster_t_interval([1.0, 2.0], clusters=["same", "same"]))
    with pytest.raises(ValueError, match="2 cluster labels for 3 values"):
        cluster_t_interval([1.0, 2.0, 3.0], clusters=["a", "b"])
    # Wider than the percentile bootstrap with few windows: five windows, one value each.
    values = [0.9, -0.4, 1.3, 0.2, -0.7]
    t_low, t_high = cluster_t_interval(values)
    b_low, b_high = bootstrap_mean_ci(values)
    assert t_high - t_low > 1.4 * (b_high - b_low)
    # Beyond the table the expansion stays within 0.3% of the exact quantiles (2.201 at 11, 2.042 at 30).
    assert t_quantile_975(4) == 2.776
    assert t_quantile_975(11) == pytest.approx(2.201, rel=3e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, rel=3e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.960, rel=1e-3)


def test_report_chart_draws_an_ensemble_outside_its_seeds_range(tmp_path):
    # Seeds that churn (random) lose to fees; their ensemble here holds cash, above every seed: the
    # chart must still be written (it used to crash after a whole walk-forward had run).
    outcomes = _outcomes(lambda market, seed: random_policy(seed), folds=3)
    for fold in (1, 2, 3):
        first = next(o for o in outcomes if o["job"]["fold"] == fold)
        cash = dict(first["test"]["cash"])
        ensemble = {**first, "job": {**first["job"], "ensemble": "mean_q", "seed": "ensemble"},
                    "test": {**first["test"], "agent": cash},
                    "equity": {**first["equity"], "agent": first["equity"]["cash"]}}
        outcomes.append(ensemble)
    result = aggregate(outcomes)
    row = result.folds[0]
    assert row["excess_sharpe"] > row["excess_sharpe_range"][1]  # the judged policy is above every seed
    write_report_png(tmp_path / "report.png", result)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_markets_sharing_a_test_window_are_one_piece_of_evidence():
    # A second market that repeats the first one's results in the same windows adds no evidence:
    # the interval stays what one market gives (values counted one by one would narrow it).
    one = _outcomes(lambda market, seed: random_policy(seed), folds=6)
    twin = [{**o, "job": {**o["job"], "market": "twin"}} for o in one]
    alone, both = aggregate(one).overall, aggregate(one + twin).overall
    assert both["folds"] == 12 and both["mean_excess_sharpe"] == pytest.approx(alone["mean_excess_sharpe"])
    assert both["excess_sharpe_ci"] == pytest.approx(alone["excess_sharpe_ci"])
    assert [regime(r) for r in (0.2, -0.2, 0.05)] == ["bull", "bear", "sideways"]


def _tiny_jobs(tmp_path, seeds=(1,), **config):
    data = tmp_path / "market.csv"
    if not data.exists():
        synthetic_frame(24 * 16, seed=5).to_csv(data)
    overrides = tiny_config(episodes=2, eval_interval=1, **config).to_dict()
    return plan_jobs([data], tmp_path / "run", overrides, list(seeds), test_days=2, train_days=5,
                     validation_days=2)


def test_fold_job_reports_validation_and_resume_skips_finished_jobs(tmp_path):
    jobs = _tiny_jobs(tmp_path)
    assert len(jobs) == 3 and json.loads(json.dumps(jobs[0].to_dict())) == jobs[0].to_dict()
    reports = []
    outcome = run_fold_job(jobs[0], report=reports.append)
    assert [r["episode"] for r in reports] == [1, 2] and {r["metric"] for r in reports} == {"sharpe"}
    assert outcome["validation"]["best_score"] == max(r["score"] for r in reports)
    assert set(outcome["test"]) == {"agent", "buy_and_hold", "cash", "random", "ma_crossover"}
    assert outcome["rows"]["test"] == 48
    # The replay never holds more than the job collects: 2 episodes x (5 days - 1 candle).
    assert outcome["config"]["buffer_size"] == 2 * (5 * 24 - 1)
    handed_out = []

    def recording_executor(pending):
        handed_out.append([job.fold for job in pending])
        return (run_fold_job(job) for job in pending)

    run_walkforward(jobs, recording_executor)
    assert handed_out == [[2, 3]]  # fold 1 had finished
    (Path(jobs[1].output_dir) / OUTCOME_FILE).unlink()
    events = []
    result = run_walkforward(jobs, recording_executor, progress=events.append)
    assert handed_out[-1] == [2]
    assert [e["resumed"] for e in events if e["event"] == "job"] == [True, True, False]
    assert [e["fold"] for e in events if e["event"] == "fold"] == [1, 3, 2]
    assert len(result.folds) == 3


def test_a_mirror_fold_job_trains_on_the_window_and_its_reflection(tmp_path):
    outcome = run_fold_job(_tiny_jobs(tmp_path, augment="mirror")[0])
    # 5 training days (120 candles) and their reflection less its 48 warm-up candles, 2 episodes.
    assert outcome["config"]["buffer_size"] == 2 * (120 + 120 - 48 - 1)
    assert outcome["config"]["augment"] == "mirror"
    assert outcome["rows"] == {"train": 120, "validation": 48, "test": 48}  # the real windows are judged


def test_a_training_window_too_short_to_mirror_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from nexlify import cli

    monkeypatch.setattr("nexlify.hardware.profiler.HardwareProfiler", _BigMachineProfiler)
    data = tmp_path / "short.csv"
    synthetic_frame(24 * 30, seed=4).to_csv(data)
    layout = {"train_days": 2, "validation_days": 2, "test_days": 2}
    # 2 training days are 48 candles: enough for the 32 every window needs, but the mirror spends its
    # 48-candle feature warm-up inside the window and needs 50. Un-augmented, the same layout plans.
    assert plan_jobs([str(data)], tmp_path / "plain", {}, [0], **layout)
    with pytest.raises(DataError, match=r"train window .* holds 48 candles, fewer than 50 \(to compute the "
                                        r"augmented training paths' features\)\. .* or augment 'none'"):
        plan_jobs([str(data)], tmp_path / "mirror", {"augment": "mirror"}, [0], **layout)
    assert len(plan_jobs([str(data)], tmp_path / "mirror", {"augment": "mirror"}, [0], **{**layout, "train_days": 3}))
    # The walk-forward mirrors by default, so its plan checks for the mirror's candles unless told otherwise.
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in layout.items()]
    assert main(["walkforward", "--data", str(data), *flags, "--checkpoint-dir", str(tmp_path / "wf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "fewer than 50" in err and "\n" not in err
    assert not (tmp_path / "wf").exists()
    config = tmp_path / "plain.json"
    config.write_text('{"augment": "none"}')
    layout_only = ["walkforward", "--data", str(data), *flags, "--config", str(config)]
    assert cli._plan_walkforward(cli.build_parser().parse_args(layout_only), tmp_path / "wf").jobs


def test_a_folder_of_another_walkforward_is_refused_not_reused(tmp_path):
    jobs = _tiny_jobs(tmp_path)
    run_fold_job(jobs[0])
    other = _tiny_jobs(tmp_path, learning_rate=0.01)
    # The error names what differs, so a user can tell an upgrade's new default from a typo.
    with pytest.raises(CheckpointError, match=r"different walk-forward job \(learning_rate 0\.0005 -> 0\.01\); "):
        run_fold_job(other[0])
    seeds = _tiny_jobs(tmp_path, seeds=(2,), learning_rate=0.02, gamma=0.5, n_step=2, batch_size=16)[0]
    with pytest.raises(CheckpointError, match=r"\(seed 1 -> 2, batch_size 32 -> 16, gamma 0\.99 -> 0\.5, and 2 more\)"):
        finished_outcome(replace(seeds, output_dir=jobs[0].output_dir))
    # Machine settings may change between runs (resume on another box); batch, pace and accounts may
    # not: they change what the job learned.
    assert run_fold_job(_tiny_jobs(tmp_path, num_workers=2, optimization_level="cpu_optimize")[0])["job"]["fold"] == 1
    for learning in ({"parallel_envs": 1}, {"batch_size": 64}, {"train_frequency": 16}):
        (key, value), = learning.items()
        with pytest.raises(CheckpointError, match=f"different walk-forward job \\({key} .* -> {value}\\)"):
            run_fold_job(_tiny_jobs(tmp_path, **learning)[0])


def test_a_job_stored_before_a_config_key_existed_is_reused_with_that_keys_default(tmp_path):
    # A fold_outcome.json written before dsr_eta existed, by a full-config job (as `nexlify walkforward`
    # plans them): the key's default then is today's, so the job is the same; a new value is not.
    job = _tiny_jobs(tmp_path)[0]
    run_fold_job(job)
    path = Path(job.output_dir) / OUTCOME_FILE
    outcome = json.loads(path.read_text())
    outcome["job"]["config_overrides"] = {k: v for k, v in TrainingConfig().with_overrides(
        outcome["job"]["config_overrides"]).to_dict().items() if k != "dsr_eta"}
    path.write_text(json.dumps(outcome))
    full = replace(job, config_overrides=TrainingConfig().with_overrides(job.config_overrides).to_dict())
    assert finished_outcome(full) is not None and finished_outcome(job) is not None
    with pytest.raises(CheckpointError, match="different walk-forward"):
        finished_outcome(replace(full, config_overrides={**full.config_overrides, "dsr_eta": 0.03}))


def test_parallel_plan_fits_jobs_and_threads_to_the_machine():
    assert parallel_plan("cpu", 1, 2, 0, 16.0)[:3] == (2, 1, None)
    assert parallel_plan("cpu", 2, 2, 0, 16.0)[:3] == (1, 2, None)
    assert parallel_plan("cpu", 1, 16, 0, 3.0)[:2] == (5, 1)  # RAM for 5 jobs of 0.6 GB
    assert parallel_plan("cpu", 4, 16, 0, 64.0, requested=8)[:2] == (8, 2)
    assert parallel_plan("cuda", 4, 16, 1, 64.0)[:3] == (4, 4, ["cuda:0"])
    assert parallel_plan("cuda", 4, 16, 2, 64.0)[:3] == (8, 2, ["cuda:0", "cuda:1"])


def test_single_window_verdict_leads_with_buy_and_hold_and_the_window_length():
    test = {"agent": {"total_return": 0.009, "sharpe": 0.5}, "buy_and_hold": {"total_return": 0.236, "sharpe": 6.8},
            "cash": {"total_return": 0.0, "sharpe": 0.0}, "random": {"total_return": -0.2, "sharpe": -3.0}}
    text = single_window_verdict(test, 26.75)
    assert text.startswith("Verdict: on this 27-day test window buy-and-hold returned +23.6% (Sharpe 6.80)")
    assert "did not beat buy-and-hold (it beat cash, random)" in text and "nexlify walkforward" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--folds", "2", "--test-days", "3"], "not allowed with"),
        (["--data", "missing.csv"], "not found"),
        (["--seeds", "0"], "positive whole number"),
        (["--train-days", "-5"], "positive number"),
        (["--jobs", "x"], "positive whole number"),
        (["--episodes", "0"], "episodes"),
        (["--device", "tpu"], "cpu, cuda"),
        (["--model-choice", "median"], "choose from 'best', 'top2', 'last', 'all'"),
        (["--model-choice", "all", "--ensemble", "none"], "acts through the seeds' ensemble"),
    ],
)
def test_walkforward_mistakes_give_one_line(argv, message, capsys):
    assert main(["walkforward", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_walkforward_on_too_short_data_says_what_to_change(tmp_path, capsys):
    data = tmp_path / "short.csv"
    synthetic_frame(24 * 20).to_csv(data)
    assert main(["walkforward", "--data", str(data), "--checkpoint-dir", str(tmp_path / "wf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--train-days" in err and "\n" not in err
    with pytest.raises(DataError, match="too short"):
        plan_folds(_frame(60), test_days=1)


def test_a_test_window_under_32_candles_asks_for_a_longer_one_not_shorter_windows():
    # 40 days of hourly candles leave room for many 1-day tests, but a day holds 24 candles, not the 32
    # a backtest needs: the fix is a 2-day window (48 candles), or folds of at least 32 hours each.
    frame = _frame(24 * 40)
    with pytest.raises(DataError, match=r"a 1-day test window holds 24 candles, fewer than the 32 .* "
                                        r"Fix: --test-days 2 or more$"):
        plan_folds(frame, train_days=10, validation_days=4, test_days=1)
    assert len(plan_folds(frame, train_days=10, validation_days=4, test_days=2)) > 1
    room_hours = (len(frame) - warmup_bars("basic")) - 14 * 24  # after the first training and validation days
    most = room_hours // 32
    with pytest.raises(DataError, match=rf"Fix: fewer --folds \(at most {most}\)$"):
        plan_folds(frame, train_days=10, validation_days=4, folds=most + 1)
    assert len(plan_folds(frame, train_days=10, validation_days=4, folds=most)) == most
    # Without room for even one 32-candle window after training and validation, shorter windows are the fix.
    for layout in ({"test_days": 1}, {"folds": 3}):
        with pytest.raises(DataError, match="cannot hold 35 training \\+ 4 validation days .* smaller --train-days"):
            plan_folds(frame, train_days=35, validation_days=4, **layout)


def _binance_kline_export(frame, path):
    """Binance's 12-column kline CSV without a header: open time in ms ... close time, quote volume, etc."""
    open_ms = frame.index.as_unit("ms").asi8
    columns = [open_ms, frame.open, frame.high, frame.low, frame.close, frame.volume, open_ms + 3_599_999,
               frame.volume * frame.close, np.full(len(frame), 100), frame.volume / 2, frame.volume * frame.close / 2,
               np.zeros(len(frame))]
    pd.DataFrame(dict(enumerate(columns))).to_csv(path, header=False, index=False)


def test_walkforward_command_runs_two_markets_in_parallel_and_resumes(tmp_path, capsys):
    files = [tmp_path / "AAA_1h.csv", tmp_path / "BBB_1h.csv"]
    synthetic_frame(24 * 12, seed=1).to_csv(files[0])
    _binance_kline_export(synthetic_frame(24 * 12, seed=2), files[1])
    argv = ["walkforward", "--data", *map(str, files), "--train-days", "4", "--validation-days", "2", "--folds",
            "2", "--seeds", "1", "--episodes", "2", "--model-size", "tiny", "--jobs", "2", "--no-pool",
            "--ensemble", "none", "--checkpoint-dir", str(tmp_path / "wf")]  # each seed alone: its best model
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "[4/4]" in out.err and "fold 2/2 of BBB_1h done" in out.err
    results = json.loads((tmp_path / "wf" / "walkforward_results.json").read_text())
    assert set(results["markets"]) == {"AAA_1h", "BBB_1h"} and len(results["jobs"]) == 4
    assert results["verdict"].startswith("All markets: in 4 out-of-sample test windows")
    assert (tmp_path / "wf" / "walkforward_report.png").stat().st_size > 10_000
    summary = (tmp_path / "wf" / "walkforward_summary.txt").read_text()
    assert "Verdict: All markets" in summary and "seeds judged by their mean" in summary  # one seed: no ensemble
    assert len(list((tmp_path / "wf").glob("*/fold_*/seed_*/best_model.pth"))) == 4
    assert main(argv) == 0
    assert capsys.readouterr().err.count("already done") == 4


def test_walkforward_never_writes_into_a_train_run_folder(tmp_path, capsys):
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / "training_results.json").write_text("{}")
    (folder / "hardware_profile.json").write_text("{}")
    assert main(["walkforward", "--checkpoint-dir", str(folder)]) == 2
    assert "holds a `nexlify train` run" in capsys.readouterr().err
    assert (folder / "hardware_profile.json").read_text() == "{}"


def test_pooled_walkforward_trains_one_policy_on_every_market_and_judges_the_seeds_ensemble(tmp_path, capsys):
    files = [tmp_path / "AAA_1h.csv", tmp_path / "BBB_1h.csv"]
    synthetic_frame(24 * 13, seed=1).to_csv(files[0])
    later = synthetic_frame(24 * 13, seed=2)
    later.index = later.index + pd.Timedelta(days=1)  # starts and ends a day after AAA
    later.to_csv(files[1])
    argv = ["walkforward", "--data", *map(str, files), "--train-days", "4", "--validation-days", "2", "--folds",
            "2", "--seeds", "2", "--episodes", "2", "--model-size", "tiny", "--jobs", "1", "--quiet",
            "--common-period", "--checkpoint-dir", str(tmp_path / "wf")]
    assert main(argv) == 0
    capsys.readouterr()
    run = tmp_path / "wf"
    # One policy per (fold, seed) for both markets: 2 folds x 2 seeds.
    assert len(list(run.glob("pooled/fold_*/seed_*/best_model.pth"))) == 4
    # The default model choice, `last`: each seed's final model, which every run keeps (no snapshots).
    assert not list(run.glob("AAA_1h/*")) and len(list(run.glob("pooled/fold_*/ensemble_mean_q_last.json"))) == 2
    assert not list(run.glob("pooled/fold_*/seed_*/validated_ep*.pth"))
    outcome = json.loads((run / "pooled" / "fold_01" / "seed_42" / OUTCOME_FILE).read_text())
    # The fold's baselines were backtested once, kept beside its seeds: 2 markets x (validation, test).
    assert len(list((run / "pooled" / "fold_01").glob("baselines_*.json"))) == 4
    other_seed = json.loads((run / "pooled" / "fold_01" / "seed_43" / OUTCOME_FILE).read_text())
    ensemble = json.loads((run / "pooled" / "fold_01" / "ensemble_mean_q_last.json").read_text())
    assert ensemble["validation"]["models"] == ["seed_42/final_model.pth", "seed_43/final_model.pth"]
    for judged in (other_seed, ensemble):
        for name, market in outcome["markets"].items():
            assert judged["markets"][name]["test"]["buy_and_hold"] == market["test"]["buy_and_hold"]
    rows = {name: market["rows"] for name, market in outcome["markets"].items()}
    # It trained on both markets' training windows end to end, each with its mirror (the walk-forward's
    # default augment) less the mirror's 48 warm-up candles: its replay holds all of them.
    mirrored = sum(2 * market["train"] - WARMUP_BARS for market in rows.values())
    assert outcome["config"]["augment"] == "mirror" and outcome["config"]["buffer_size"] == 2 * (mirrored - 1)
    results = json.loads((run / "walkforward_results.json").read_text())
    folds = results["folds"]
    assert {r["market"] for r in folds} == {"AAA_1h", "BBB_1h"} and len(folds) == 4
    # Both markets share the windows, inside the period both cover (AAA's last day and BBB's first are left out).
    for fold in (1, 2):
        a, b = (r["windows"] for r in folds if r["fold"] == fold)
        assert a == b
    first_shared = pd.Timestamp(later.index[0])
    last_shared = pd.Timestamp(synthetic_frame(24 * 13, seed=1).index[-1])
    assert pd.Timestamp(folds[0]["windows"]["train"][0]) > first_shared
    assert pd.Timestamp(folds[-1]["windows"]["test"][1]) == last_shared + HOUR
    for row in folds:
        assert row["policy"] == "mean_q ensemble of 2 seed(s)" and row["pooled"]
        assert row["agent_sharpe"] == row["ensemble"]["sharpe"]
        bh = row["baselines"]["buy_and_hold"]["sharpe"]
        assert row["excess_sharpe"] == pytest.approx(row["ensemble"]["sharpe"] - bh)
    summary = (run / "walkforward_summary.txt").read_text()
    assert "seeds judged as a mean_q ensemble of their last (final) models" in summary
    assert "folds in the period every market covers" in summary and results["run"]["model_choice"] == "last"
    assert main(argv) == 0  # resumes: every job and ensemble is read back
    assert json.loads((run / "walkforward_results.json").read_text())["folds"] == folds
    # The same folder with other learning settings is refused before anything in it is written over.
    written = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != ".nexlify.lock"}
    capsys.readouterr()
    assert main([*argv, "--batch-size", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "batch_size 256 -> 16" in err[0], err
    assert {path: path.read_bytes() for path in written} == written


def test_an_ensemble_of_one_seed_is_that_seed(tmp_path):
    from nexlify.evaluation.fold_ensemble import run_fold_ensemble

    job = _tiny_jobs(tmp_path)[0]
    outcome = run_fold_job(job)
    alone = run_fold_ensemble([job], "mean_q")
    assert alone["job"]["ensemble"] == "mean_q" and alone["job"]["seeds"] == [job.seed]
    assert alone["test"] == outcome["test"] and alone["validation_backtest"] == outcome["validation_backtest"]
    assert alone["equity"]["agent"] == outcome["equity"]["agent"]


def test_fold_rows_judge_the_ensemble_and_report_the_seeds_spread():
    outcomes = _outcomes(lambda market, seed: random_policy(seed), folds=1, seeds=2)
    for outcome, sharpe in zip(outcomes, (0.1, 0.3), strict=True):
        outcome["test"]["agent"] = {**outcome["test"]["agent"], "sharpe": sharpe}
        outcome["test"]["buy_and_hold"] = {**outcome["test"]["buy_and_hold"], "sharpe": 0.2}
    ensemble = json.loads(json.dumps(outcomes[0]))
    ensemble["job"].update(ensemble="vote", seeds=[0, 1])
    ensemble["test"]["agent"] = {**ensemble["test"]["agent"], "sharpe": 0.5, "max_drawdown": 0.01}
    row = aggregate([*outcomes, ensemble]).folds[0]
    assert row["policy"] == "vote ensemble of 2 seed(s)"
    assert row["agent_sharpe"] == 0.5 and row["excess_sharpe"] == pytest.approx(0.3)
    assert row["excess_sharpe_range"] == pytest.approx([-0.1, 0.1])  # the seeds' own spread
    assert row["agent_max_drawdown"] == 0.01 and row["beats_buy_and_hold"]
    plain = aggregate(outcomes).folds[0]
    assert plain["policy"] == "mean of 2 seed(s)" and plain["agent_sharpe"] == pytest.approx(0.2)
    assert not plain["beats_buy_and_hold"]


def test_without_every_seeds_model_on_this_machine_the_seeds_mean_is_judged(tmp_path):
    from nexlify.training.trainer import BEST_MODEL

    jobs = _tiny_jobs(tmp_path, seeds=(1, 2))
    for job in jobs:
        run_fold_job(job)
    # As after a Ray run whose node kept its models on its own disk: one fold lacks a seed's model.
    (Path(jobs[0].output_dir) / BEST_MODEL).unlink()
    result = run_walkforward(jobs, ensemble="mean_q")
    assert {row["policy"] for row in result.folds} == {"mean of 2 seed(s)"}  # every fold judged alike
    assert not any(o["job"].get("ensemble") for o in result.outcomes)
    for row in result.folds:
        assert row["agent_sharpe"] == pytest.approx(np.mean([m["sharpe"] for m in row["agent"].values()]))
    # With every model here, every fold is judged by its ensemble.
    (tmp_path / "all").mkdir()
    again = run_walkforward(_tiny_jobs(tmp_path / "all", seeds=(1, 2)), ensemble="mean_q")
    assert {row["policy"] for row in again.folds} == {"mean_q ensemble of 2 seed(s)"}


def test_model_choice_last_of_one_seed_is_its_final_model(tmp_path):
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.backtest import agent_policy
    from nexlify.evaluation.fold_ensemble import run_fold_ensemble
    from nexlify.evaluation.fold_markets import market_backtests, market_splits
    from nexlify.evaluation.snapshots import choose, run_snapshots

    job = _tiny_jobs(tmp_path, keep_validated_models=True)[0]
    outcome = run_fold_job(job)
    with pytest.raises(ConfigError, match="chooses by every seed's validation history"):
        run_fold_ensemble([job], "mean_q", "top2")
    last = run_fold_ensemble([job], "mean_q", "last")  # no validation history needed
    assert last["validation"]["models"] == ["seed_1/final_model.pth"]
    assert last["job"]["model_choice"] == "last"
    # The last validation is where the run ended (episodes 1 and 2): that snapshot, chosen by the
    # rule from the kept files, acts exactly as the final model.
    (snapshot,) = chosen = choose([run_snapshots(job.output_dir, outcome["validation"]["history"])], "last")
    assert snapshot.path.name == "validated_ep2.pth"
    config = TrainingConfig().with_overrides({**job.config_overrides, "data_days": None})
    splits = market_splits(job, config.feature_set)["market"]
    alone = market_backtests(agent_policy(AdaptiveDQNAgent.from_checkpoint(chosen[0].path, device="cpu")),
                             splits, config)
    assert last["test"]["agent"] == alone["test"]["agent"]
    assert last["validation_backtest"]["agent"] == alone["validation_backtest"]["agent"]


def test_model_choice_all_ensembles_every_snapshot_and_resumes_from_its_file(tmp_path):
    jobs = _tiny_jobs(tmp_path, seeds=(1, 2))  # trained without keep_validated_models: the choice turns it on
    result = run_walkforward(jobs, ensemble="mean_q", model_choice="all")
    stored = [o for o in result.outcomes if o["job"].get("ensemble")]
    assert len(stored) == 3 and all(o["job"]["model_choice"] == "all" for o in stored)
    assert stored[0]["validation"]["models"] == [f"seed_{s}/validated_ep{e}.pth" for s in (1, 2) for e in (1, 2)]
    assert len(list((tmp_path / "run").glob("market/fold_*/ensemble_mean_q_all.json"))) == 3
    assert not list((tmp_path / "run").glob("market/fold_*/ensemble_mean_q.json"))
    again = run_walkforward(jobs, ensemble="mean_q", model_choice="all")  # every job and ensemble read back
    assert again.folds == result.folds
    # The snapshots change nothing learnt: the best model's ensemble of the same jobs reuses their outcomes.
    best = run_walkforward(jobs, ensemble="mean_q")
    assert [o["test"] for o in best.outcomes if not o["job"].get("ensemble")] == \
        [o["test"] for o in result.outcomes if not o["job"].get("ensemble")]


def test_a_model_choice_needs_an_ensemble_and_the_snapshots_it_chooses_from(tmp_path):
    jobs = _tiny_jobs(tmp_path, seeds=(1, 2))
    with pytest.raises(ConfigError, match="acts through the seeds' ensemble"):
        run_walkforward(jobs, ensemble=None, model_choice="all")
    with pytest.raises(ConfigError, match="model choice must be one of"):
        run_walkforward(jobs, ensemble="mean_q", model_choice="median")
    run_walkforward(jobs[:2], ensemble="mean_q")  # fold 1 trained keeping its best models only
    with pytest.raises(ConfigError, match="validated_ep1.pth not found.*keep_validated_models"):
        run_walkforward(jobs[:2], ensemble="mean_q", model_choice="top2")


def _market_file(tmp_path, name, start, days, seed):
    frame = synthetic_frame(24 * days, seed=seed)
    frame.index = pd.date_range(start, periods=len(frame), freq="h", tz="UTC", name="timestamp")
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path)
    return path


def test_unpooled_markets_from_different_years_get_windows_of_their_own_history(tmp_path):
    # 2021 and 2024 share no hour: one set of windows cannot span them, so each market has its own.
    early = _market_file(tmp_path, "early", "2021-03-01", 20, seed=1)
    late = _market_file(tmp_path, "late", "2024-06-01", 16, seed=2)
    layout = dict(test_days=3, train_days=5, validation_days=2)
    jobs = plan_jobs([early, late], tmp_path / "run", {}, [7, 8], **layout)
    for job in jobs:
        frame = load_ohlcv(job.data)
        assert frame.index[0] <= pd.Timestamp(job.train_start) < pd.Timestamp(job.test_end) <= frame.index[-1] + HOUR
    by_market = {name: [j for j in jobs if j.market == name] for name in ("early", "late")}
    # Each market's windows are the ones its own history gives alone (early's 20 days hold 3 tests, late's 16 hold 2).
    for name, path in (("early", early), ("late", late)):
        alone = plan_folds(load_ohlcv(path), **layout)
        assert sorted({(j.fold, j.test_start) for j in by_market[name]}) == [(w.fold, w.test_start) for w in alone]
        assert len(by_market[name]) == 2 * len(alone)
    assert [j.fold for j in jobs] == sorted(j.fold for j in jobs)  # still fold by fold
    with pytest.raises(DataError, match="share no common period.*--no-pool"):
        plan_jobs([early, late], tmp_path / "pooled", {}, [7], pool=True, **layout)


def _partly_overlapping(tmp_path):
    """early: 2024-01-01 .. 01-20 23:00; late: 01-05 .. 01-24 23:00 (20 days each, 48 warm-up candles)."""
    return (_market_file(tmp_path, "early", "2024-01-01", 20, seed=1),
            _market_file(tmp_path, "late", "2024-01-05", 20, seed=2))


# Laid over both histories (2024-01-01 .. 01-25), 3-day tests back from 01-25 after 48 warm-up candles
# and 5 + 2 days: five folds, testing from 01-10. early (to 01-21) holds folds 1-3 to their test end;
# late needs 48 candles before the training start (from 01-07): folds 3-5.
UNION_FOLDS = [(1, "01-10", ("early",)), (2, "01-13", ("early",)), (3, "01-16", ("early", "late")),
               (4, "01-19", ("late",)), (5, "01-22", ("late",))]
# Only the period both cover (01-05 .. 01-21): 48 warm-up candles, 5 + 2 days, then room for two tests.
COMMON_FOLDS = [(1, "01-15", ("early", "late")), (2, "01-18", ("early", "late"))]


def _fold_members(jobs):
    return [(j.fold, j.test_start[5:10], tuple(name for name, _ in j.members)) for j in jobs]


def test_pooled_markets_of_partly_overlapping_histories_are_judged_over_all_of_them(tmp_path):
    early, late = _partly_overlapping(tmp_path)
    layout = dict(test_days=3, train_days=5, validation_days=2)
    jobs = plan_jobs([early, late], tmp_path / "run", {}, [7], pool=True, **layout)
    assert _fold_members(jobs) == UNION_FOLDS
    assert all(j.market == "pooled" and j.output_dir.endswith(f"pooled/fold_{j.fold:02d}/seed_7") for j in jobs)
    for job in jobs:  # every member holds its warm-up and the whole fold
        for _, path in job.members:
            frame = load_ohlcv(path)
            assert (frame.index < pd.Timestamp(job.train_start)).sum() >= WARMUP_BARS
            assert pd.Timestamp(job.test_end) <= frame.index[-1] + HOUR
    # Test windows back to back up to the later market's last candle: 15 days against 6 in the common period.
    assert [(a.test_end == b.test_start) for a, b in zip(jobs[:-1], jobs[1:], strict=True)] == [True] * 4
    assert pd.Timestamp(jobs[-1].test_end) == load_ohlcv(late).index[-1] + HOUR
    common = plan_jobs([early, late], tmp_path / "common", {}, [7], pool=True, common_period=True, **layout)
    assert _fold_members(common) == COMMON_FOLDS
    # Anchored folds train from where every market has candles: the common period's layout.
    anchored = plan_jobs([early, late], tmp_path / "anchored", {}, [7], pool=True, anchored=True, **layout)
    assert [(j.fold, j.test_start[5:10]) for j in anchored] == [(f, t) for f, t, _ in COMMON_FOLDS]
    assert {j.train_start[:10] for j in anchored} == {"2024-01-07"}


def test_unpooled_markets_share_the_windows_of_the_folds_each_history_covers(tmp_path):
    early, late = _partly_overlapping(tmp_path)
    jobs = plan_jobs([early, late], tmp_path / "run", {}, [7], test_days=3, train_days=5, validation_days=2)
    assert _fold_members(jobs) == [(fold, start, (name,)) for fold, start, names in UNION_FOLDS for name in names]
    windows = {name: {j.fold: j.windows for j in jobs if j.market == name} for name in ("early", "late")}
    assert windows["early"][3] == windows["late"][3]  # fold 3 is the same days for both


def test_a_market_whose_history_holds_no_fold_is_refused_by_name(tmp_path):
    early, _ = _partly_overlapping(tmp_path)
    brief = _market_file(tmp_path, "brief", "2024-01-12", 4, seed=3)  # 4 days: no 5 + 2 + 3-day fold fits
    with pytest.raises(DataError, match=r"brief\.csv: its candles \(2024-01-12 to 2024-01-15\) hold none of the folds"):
        plan_jobs([early, brief], tmp_path / "run", {}, [7], pool=True, test_days=3, train_days=5, validation_days=2)


def test_pooled_walkforward_over_partly_overlapping_markets_judges_each_on_its_own_folds(tmp_path, capsys):
    early, late = _partly_overlapping(tmp_path)
    argv = ["walkforward", "--data", str(early), str(late), "--train-days", "5", "--validation-days", "2",
            "--test-days", "3", "--seeds", "1", "--episodes", "1", "--model-size", "tiny", "--jobs", "1",
            "--quiet", "--checkpoint-dir", str(tmp_path / "wf")]
    assert main(argv) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "wf" / "walkforward_results.json").read_text())
    folds = {name: [r["fold"] for r in results["folds"] if r["market"] == name] for name in ("early", "late")}
    assert folds == {"early": [1, 2, 3], "late": [3, 4, 5]}
    assert results["overall"]["folds"] == 6 and results["verdict"].startswith("All markets: in 6 out-of-sample")
    assert results["markets"]["early"]["folds"] == 3 and results["markets"]["late"]["folds"] == 3
    # Fold 3's one policy trained on both markets' training windows; folds 1 and 5 on one market each.
    outcome = json.loads((tmp_path / "wf" / "pooled" / "fold_03" / "seed_42" / OUTCOME_FILE).read_text())
    assert set(outcome["markets"]) == {"early", "late"}
    only = json.loads((tmp_path / "wf" / "pooled" / "fold_05" / "seed_42" / OUTCOME_FILE).read_text())
    assert set(only["markets"]) == {"late"}
    assert "folds over all of the markets' history" in (tmp_path / "wf" / "walkforward_summary.txt").read_text()
    # The same folder laid in the common period instead is another walk-forward: refused, naming the flag.
    written = {path: path.read_bytes() for path in (tmp_path / "wf").rglob("*") if path.is_file()
               and path.name != ".nexlify.lock"}
    assert main([*argv, "--common-period"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fold_01/seed_42/fold_outcome.json holds the result of a different" in err[0], err
    assert "pool ['early'] -> ['early', 'late'], test_end '2024-01-13T00:00:00+00:00' -> '2024-01-18" in err[0]
    assert "--anchored and --common-period as that run reuse it" in err[0]
    assert {path: path.read_bytes() for path in written} == written


class _BigMachineProfiler:
    """A profiler whose plan is a big machine's (the batch, model and accounts an H100 plans)."""

    profile = {"cpu": {"usable_cores": 16}}

    def __init__(self, *args, **kwargs):
        self.config = TrainingConfig(model_size="xlarge", batch_size=8192, train_frequency=1024,
                                     target_update_interval=2, learning_starts=16_384, buffer_size=500_000,
                                     parallel_envs=1024, gradient_accumulation_steps=2,
                                     optimization_level="max_performance", memory_reserve_gb=3.0)

    def explain(self):
        return []


def _walkforward_plan(monkeypatch, tmp_path, *flags):
    from nexlify import cli

    monkeypatch.setattr("nexlify.hardware.profiler.HardwareProfiler", _BigMachineProfiler)
    args = cli.build_parser().parse_args(["walkforward", "--folds", "2", "--seeds", "2", *flags])
    return cli._plan_walkforward(args, tmp_path / "wf")


def test_walkforward_jobs_learn_with_the_validated_settings_whatever_the_machine_plans(monkeypatch, tmp_path):
    from nexlify.distributed.executor import job_for_this_node
    from nexlify.evaluation.defaults import WALKFORWARD_LEARNING

    plan = _walkforward_plan(monkeypatch, tmp_path)
    assert len(plan.jobs) == 4
    for job in plan.jobs:
        learned = {key: job.config_overrides[key] for key in WALKFORWARD_LEARNING}
        assert learned == {"model_size": "large", "batch_size": 256, "gradient_accumulation_steps": 1,
                           "train_frequency": 32, "target_update_interval": 62, "learning_starts": 10_000,
                           "buffer_size": 250_000, "parallel_envs": 32, "augment": "mirror"}
        # 6 episodes (each over the market and its mirror), validated every episode: 6 checks a run.
        assert (job.config_overrides["episodes"], job.config_overrides["eval_interval"]) == (6, 1)
        # How the job runs is still the machine's.
        assert job.config_overrides["optimization_level"] == "max_performance"
        assert job.config_overrides["memory_reserve_gb"] == 3.0
        # A Ray node replans the machine's settings only: the validated ones travel as set.
        on_node = job_for_this_node(job, plan.overrides, {}, {})
        assert {key: on_node.config_overrides[key] for key in WALKFORWARD_LEARNING} == learned
    from nexlify.cli import _validated_settings_line

    assert "model_size large, batch_size 256," in _validated_settings_line(plan.overrides)


def test_walkforward_flags_and_config_override_the_validated_settings_at_their_pace(monkeypatch, tmp_path):
    config = tmp_path / "xlarge.json"
    config.write_text(json.dumps({"model_size": "xlarge", "buffer_size": 100_000}))
    plan = _walkforward_plan(monkeypatch, tmp_path, "--batch-size", "1024", "--config", str(config))
    job = plan.jobs[0].config_overrides
    assert (job["model_size"], job["buffer_size"], job["batch_size"]) == ("xlarge", 100_000, 1024)
    # The validated replay ratio (256 / 32 = 8 samples per transition) and target refresh spacing
    # (62 x 32 = 1,984 transitions), not the machine's: 1024 / 8 = 128; 1,984 / 128 = 15.5 -> 16.
    assert (job["train_frequency"], job["target_update_interval"]) == (128, 16)
    assert job["parallel_envs"] == 32
    from nexlify.cli import _validated_settings_line

    line = _validated_settings_line(plan.overrides)
    assert "parallel_envs 32" in line and "batch_size" not in line and "model_size" not in line


def test_parallel_plan_with_measured_speeds_finishes_the_jobs_soonest():
    # The 2-core VM: 6,749 transitions/s on 1 thread, 9,970 on 2. Fifteen jobs: 8 rounds of two
    # (8 / 6,749 = 1.19e-3) beat 15 of one (15 / 9,970 = 1.50e-3).
    rates = {1: 6749.3, 2: 9970.0}
    jobs, threads, devices, why = parallel_plan("cpu", 2, 2, 0, 16.0, jobs_total=15, rates=rates)
    assert (jobs, threads, devices) == (2, 1, None) and "soonest done" in why
    # One job: nothing to share, so one at the planned threads.
    assert parallel_plan("cpu", 2, 2, 0, 16.0, jobs_total=1, rates=rates)[:2] == (1, 2)
    assert parallel_plan("cpu", 2, 2, 0, 16.0, requested=1, jobs_total=15, rates=rates)[:2] == (1, 2)


def test_a_stop_signal_ends_jobs_side_by_side_cleanly_each_with_its_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "market.csv"
    synthetic_frame(24 * 40, seed=5).to_csv(data)
    out = tmp_path / "wf"
    command = [sys.executable, "-m", "nexlify.cli", "walkforward", "--data", str(data), "--test-days", "3",
               "--train-days", "20", "--validation-days", "3", "--seeds", "2", "--model-size", "tiny",
               "--jobs", "2", "--quiet", "--checkpoint-dir", str(out)]
    # Far more episodes than the test waits for, validated after each: both first jobs are in their loops
    # (each has a best model) when the parent is signalled.
    (tmp_path / "every_episode.json").write_text(json.dumps({"eval_interval": 1}))
    process = subprocess.Popen([*command, "--episodes", "100000", "--config", str(tmp_path / "every_episode.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = [out / "market" / "fold_01" / f"seed_{seed}" for seed in (42, 43)]  # market: named after its file
    deadline = time.monotonic() + 120
    while (not all((p / "best_model.pth").exists() for p in started) and time.monotonic() < deadline
           and process.poll() is None):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-800:]
    assert "run the same command to go on" in err
    assert all((p / "checkpoint_interrupted.pth").is_file() for p in started), sorted(map(str, out.rglob("*")))


def _file_with_outage(tmp_path, name, days, outage_day, missing, seed=3):
    """An hourly market of ``days`` days with ``missing`` candles cut out from the start of ``outage_day``."""
    frame = synthetic_frame(24 * days, seed=seed)
    cut = frame.iloc[24 * outage_day: 24 * outage_day + missing]
    path = tmp_path / f"{name}.csv"
    frame.drop(cut.index).to_csv(path)
    return path, cut.index[-1]


def test_folds_are_laid_after_an_outage_the_gap_policy_refuses(tmp_path, caplog):
    # 30 missing hours (more than the 24 accepted) on day 4 of 24: the folds use the 20 days after it.
    path, last_missing = _file_with_outage(tmp_path, "outage", 24, outage_day=4, missing=30)
    layout = dict(test_days=3, train_days=5, validation_days=2)
    with caplog.at_level("WARNING"):
        jobs = plan_jobs([path], tmp_path / "run", {}, [7], **layout)
    assert "30 missing candles ending" in caplog.text and "the folds use the history after them" in caplog.text
    first_after = last_missing + HOUR
    assert min(pd.Timestamp(j.train_start) for j in jobs) >= first_after + 48 * HOUR  # the warm-up after it
    # With --folds the first fold trains from the first candle after the outage's warm-up, exactly.
    two = plan_jobs([path], tmp_path / "run_two", {}, [7], folds=2, train_days=5, validation_days=2)
    assert min(pd.Timestamp(j.train_start) for j in two) == first_after + 48 * HOUR
    after = load_ohlcv(path, max_gap_bars=None).loc[lambda f: f.index >= first_after]
    assert [(j.fold, j.test_start) for j in jobs] == [(w.fold, w.test_start) for w in plan_folds(after, **layout)]
    # Without the outage the same 24 days hold more folds: the cut is what made them fewer.
    whole = plan_folds(load_ohlcv(synthetic_frame(24 * 24, seed=3)), **layout)
    assert len(whole) > len(jobs)
    # A short gap (24 candles) is kept in place: no cut, the folds start where the history allows.
    short, _ = _file_with_outage(tmp_path, "short_gap", 24, outage_day=4, missing=24)
    kept = plan_jobs([short], tmp_path / "run_short", {}, [7], **layout)
    assert min(pd.Timestamp(j.train_start) for j in kept) < first_after


def test_an_outage_that_leaves_too_little_history_is_refused_in_one_line(tmp_path, capsys):
    path, _ = _file_with_outage(tmp_path, "late_outage", 24, outage_day=15, missing=30)
    args = ["walkforward", "--data", str(path), "--test-days", "3", "--train-days", "5", "--validation-days", "2",
            "--checkpoint-dir", str(tmp_path / "wf")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "after its 30 missing candles ending" in err and "--train-days" in err
    assert not (tmp_path / "wf").exists()


def test_the_default_model_choice_is_the_final_models_through_an_ensemble_and_the_best_alone():
    from nexlify.evaluation.defaults import default_model_choice

    assert [default_model_choice(mode) for mode in ("mean_q", "vote", "consensus")] == ["last"] * 3
    assert default_model_choice(None) == default_model_choice("none") == "best"
