"""The training loop: rounds, outputs, best-on-validation, exact resume, adaptation, interruption."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from helpers import synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.data.market import prepare_market
from nexlify.hardware.cpu import Cpu
from nexlify.hardware.measurements import LoopRate, Measurements, RunCosts
from nexlify.training import trainer as trainer_module
from nexlify.training.pipeline import run_training
from nexlify.training.trainer import Trainer, TrainingInterrupted


@pytest.fixture(scope="module")
def splits():
    return prepare_market(synthetic_frame(420, seed=1), data_days=None)


def test_full_run_writes_every_output_and_picks_best_on_validation(tmp_path):
    results = run_training(tiny_config(episodes=6), data=synthetic_frame(420, seed=1), output_dir=tmp_path,
                           quiet=True)
    for name in ("hardware_profile.json", "training_results.json", "training_report.png", "training_summary.txt",
                 "checkpoint_ep2.pth", "checkpoint_ep4.pth", "checkpoint_ep6.pth", "best_model.pth",
                 "final_model.pth"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "training_results.json").read_text())
    assert len(saved["episodes"]) == 6
    scores = [v["score"] for v in saved["validation"]]
    best = saved["validation"][int(np.argmax(scores))]["episode"]
    assert saved["run"]["best_episode"] == best  # best by validation score, not by training episode
    assert set(saved["test"]) == {"agent", "buy_and_hold", "cash", "random", "ma_crossover"}
    assert saved["test"]["cash"]["total_return"] == 0.0
    assert saved["config"]["episodes"] == 6
    assert results["run"]["transitions"] == 6 * (saved["run"]["rows"]["train"] - 1)
    best_agent = AdaptiveDQNAgent.from_checkpoint(tmp_path / "best_model.pth")
    assert best_agent.checkpoint_metadata["episodes_done"] == best


def _weights(agent):
    return [p.detach().clone() for p in agent.q_network.parameters()]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, splits):
    full = Trainer(tiny_config(episodes=4), splits, tmp_path / "full")
    full.train()
    # As if the run had been killed after its first checkpoint: continue from it elsewhere.
    resumed = Trainer(tiny_config(episodes=4), splits, tmp_path / "resumed",
                      resume_from=tmp_path / "full" / "checkpoint_ep2.pth")
    resumed.train()
    for a, b in zip(_weights(full.agent), _weights(resumed.agent), strict=True):
        assert torch.equal(a, b)
    assert resumed.state.episodes_done == 4
    assert [e["reward"] for e in resumed.state.episodes] == [e["reward"] for e in full.state.episodes]


def test_out_of_memory_halves_batch_and_keeps_effective_batch(tmp_path, splits):
    trainer = Trainer(tiny_config(episodes=2, batch_size=32), splits, tmp_path)
    real_learn = trainer.agent.learn_tensor
    calls = {"n": 0}

    def flaky_learn():
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_learn()

    trainer.agent.learn_tensor = flaky_learn
    trainer.train()
    assert trainer.agent.config.batch_size == 16
    assert trainer.agent.config.gradient_accumulation_steps == 2
    assert [e["kind"] for e in trainer.state.events] == ["oom_adapt"]


def test_low_host_memory_stops_replay_growth(tmp_path, splits, monkeypatch):
    monkeypatch.setattr(trainer_module, "available_memory_gb", lambda: 0.1)
    trainer = Trainer(tiny_config(episodes=2, memory_reserve_gb=0.5), splits, tmp_path)
    trainer.train()
    assert trainer.state.replay_frozen
    assert trainer.state.events[0]["kind"] == "replay_frozen"
    # Frozen at the first check, the memory never grew past what it held then.
    assert len(trainer.agent.replay) <= 2


def _same_run(a: Trainer, b: Trainer) -> None:
    """Two trainers ended with the same weights, episode records and validation scores."""
    for x, y in zip(_weights(a.agent), _weights(b.agent), strict=True):
        assert torch.equal(x, y)
    keys = ("episode", "reward", "return", "loss", "epsilon")
    assert [[e[k] for k in keys] for e in a.state.episodes] == [[e[k] for k in keys] for e in b.state.episodes]
    assert [(v["episode"], v["score"]) for v in a.state.validation] == \
        [(v["episode"], v["score"]) for v in b.state.validation]
    assert (a.state.transitions, a.agent.updates) == (b.state.transitions, b.agent.updates)


@pytest.mark.parametrize(("stop_signal", "at_learn_call"), [("SIGINT", 40), ("SIGTERM", 90)])
def test_a_stop_signal_saves_a_checkpoint_that_resumes_exactly(tmp_path, splits, stop_signal, at_learn_call):
    # The signal arrives mid-round (learning call 40 is in the first round, 90 in the second): the
    # loop finishes its step, saves, and the resumed run ends exactly where an unstopped one does.
    full = Trainer(tiny_config(episodes=4), splits, tmp_path / "full")
    full.train()
    stopped = Trainer(tiny_config(episodes=4), splits, tmp_path / "stopped")
    real_learn = stopped.agent.learn_tensor
    calls = {"n": 0}

    def learn_then_signal():
        calls["n"] += 1
        if calls["n"] == at_learn_call:
            os.kill(os.getpid(), getattr(signal, stop_signal))
        return real_learn()

    stopped.agent.learn_tensor = learn_then_signal
    with pytest.raises(TrainingInterrupted, match=stop_signal) as raised:
        stopped.train()
    path = tmp_path / "stopped" / "checkpoint_interrupted.pth"
    assert raised.value.checkpoint == path and path.exists()
    assert not (tmp_path / "stopped" / "final_model.pth").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = Trainer(tiny_config(episodes=4), splits, tmp_path / "stopped", resume_from=path)
    assert resumed.state.round is not None and resumed.state.round["step"] > 0  # stopped mid-round
    resumed.train()
    _same_run(full, resumed)


@pytest.mark.parametrize(("episodes", "parallel_envs", "save_interval", "rounds"),
                         [(6, 4, 2, [4, 2]), (6, 6, 2, [6]), (5, 2, 5, [2, 2, 1])])
def test_checkpoints_land_on_every_multiple_of_save_interval(tmp_path, splits, monkeypatch, episodes,
                                                             parallel_envs, save_interval, rounds):
    seen = []
    real_accounts = trainer_module.Accounts

    def recording_accounts(market, num_envs, **kwargs):
        seen.append(num_envs)
        return real_accounts(market, num_envs, **kwargs)

    monkeypatch.setattr(trainer_module, "Accounts", recording_accounts)
    config = tiny_config(episodes=episodes, parallel_envs=parallel_envs, save_interval=save_interval)
    Trainer(config, splits, tmp_path).train()
    assert seen == rounds  # rounds hold the planned number of accounts, not a divisor of save_interval
    expected = {f"checkpoint_ep{n}.pth" for n in range(save_interval, episodes + 1, save_interval)}
    assert {p.name for p in tmp_path.glob("checkpoint_ep*.pth")} == expected


@pytest.mark.parametrize("episode_start", ["first", "staggered"])
def test_resume_from_a_checkpoint_taken_mid_round_is_exact(tmp_path, splits, episode_start):
    # Six accounts in one round (as on a GPU) with save_interval 2: ep2 and ep4 are taken mid-round.
    # Staggered accounts stand at six different rows of the loop when it is taken.
    config = tiny_config(episodes=6, parallel_envs=6, save_interval=2, episode_start=episode_start)
    full = Trainer(config, splits, tmp_path / "full")
    full.train()
    resumed = Trainer(config, splits, tmp_path / "resumed", resume_from=tmp_path / "full" / "checkpoint_ep2.pth")
    assert resumed.state.episodes_done == 0
    assert resumed.state.round["step"] == -(-2 * (len(splits.train) - 1) // 6)  # first step past 2 episodes
    resumed.train()
    _same_run(full, resumed)


def test_parallel_envs_beyond_the_episodes_records_the_count_that_ran(tmp_path, splits):
    trainer = Trainer(tiny_config(episodes=3, parallel_envs=8, save_interval=3), splits, tmp_path)
    assert trainer.config.parallel_envs == 3
    trainer.train()
    saved = AdaptiveDQNAgent.from_checkpoint(tmp_path / "final_model.pth")
    assert saved.config.parallel_envs == 3


def test_run_steps_the_real_loop_for_a_number_of_transitions(tmp_path, splits):
    # What a measurement of the real loop calls: a burst, continued exactly by the next call.
    trainer = Trainer(tiny_config(episodes=4), splits, tmp_path / "burst")
    assert trainer.run(max_transitions=100) is False
    assert trainer.state.transitions == 100 and trainer.agent.updates > 0
    round_transitions = 2 * (len(splits.train) - 1)
    assert trainer.run(max_transitions=round_transitions - 100) is False  # ends with the first round
    assert (trainer.state.transitions, trainer.state.episodes_done) == (round_transitions, 2)
    assert trainer.run() is True
    full = Trainer(tiny_config(episodes=4), splits, tmp_path / "full")
    assert full.run() is True
    _same_run(full, trainer)


def test_a_round_runs_its_whole_window_when_every_account_is_ruined_on_either_backend(tmp_path):
    # Prices fall ~2% an hour and every account buys at once: all are ruined long before the end.
    # The round still walks the whole window (ruined accounts are refunded where they stand), so the
    # run collects exactly episodes x window transitions, the workload the exploration schedule and
    # the projection are sized for, and both backends agree.
    crash = prepare_market(synthetic_frame(420, seed=1, drift=-0.02), data_days=None)
    episode_steps = len(crash.train) - 1
    outcomes = {}
    for backend in ("numpy", "torch"):
        trainer = Trainer(tiny_config(episodes=2, env_backend=backend), crash, tmp_path / backend)

        def always_buy(obs, explore=True):
            return torch.ones(len(obs), dtype=torch.int64) if isinstance(obs, torch.Tensor) else np.ones(
                len(obs), dtype=np.int64)

        trainer.agent.act = always_buy
        state = trainer.train()
        assert all(e["final_equity"] <= 1_000.0 for e in state.episodes)  # ruined
        assert state.transitions == 2 * episode_steps == trainer.agent.steps
        outcomes[backend] = (state.transitions, trainer.agent.epsilon, [e["reward"] for e in state.episodes])
    assert outcomes["numpy"][:2] == outcomes["torch"][:2]
    np.testing.assert_allclose(outcomes["numpy"][2], outcomes["torch"][2], rtol=1e-6)


def test_exploration_decays_over_the_workload(tmp_path, splits):
    trainer = Trainer(tiny_config(episodes=4, exploration_fraction=0.5), splits, tmp_path)
    per_episode = len(splits.train) - 1
    assert trainer.agent.config.epsilon_decay_steps == int(0.5 * 4 * per_episode)


def test_device_resident_path_trains_on_the_cpu_device(tmp_path, splits):
    # env_backend="torch" is what a GPU run uses; on the CPU device it must run the same workload.
    trainer = Trainer(tiny_config(episodes=4, env_backend="torch", reward_mode="log_return"), splits, tmp_path)
    assert trainer.uses_device_envs
    state = trainer.train()
    assert state.episodes_done == 4
    assert state.transitions == 4 * (len(splits.train) - 1)
    assert trainer.agent.updates > 0
    assert len(trainer.agent.replay) == min(state.transitions, 5_000)
    # With log_return each episode's reward is the log growth of its account (its rewards add up),
    # less the default switching penalty of 0.004 per fill: a whole number of fills, at least one.
    penalty = trainer.config.trade_penalty
    assert penalty == 0.004
    for episode in state.episodes:
        fills = (np.log1p(episode["return"]) - episode["reward"]) / penalty
        assert fills == pytest.approx(round(fills), abs=0.05) and round(fills) >= 1


def test_the_default_reward_is_the_costed_differential_sharpe(tmp_path, splits):
    # The default trains on differential Sharpe rewards: an episode's rewards no longer add up to its
    # log growth less 0.004 per fill (they are Sharpe increments, of another scale).
    config = tiny_config(episodes=2)
    assert config.reward_mode == "differential_sharpe"
    state = Trainer(config, splits, tmp_path).train()
    gaps = [(np.log1p(episode["return"]) - episode["reward"]) / config.trade_penalty for episode in state.episodes]
    assert all(abs(gap - round(gap)) > 0.05 for gap in gaps)


def test_dsr_eta_reaches_the_training_reward(tmp_path, splits):
    # The same seeded run with another differential Sharpe rate: its first episode's rewards differ.
    default = Trainer(tiny_config(episodes=1), splits, tmp_path / "default").train()
    again = Trainer(tiny_config(episodes=1), splits, tmp_path / "again").train()
    faster = Trainer(tiny_config(episodes=1, dsr_eta=0.1), splits, tmp_path / "faster").train()
    assert default.episodes[0]["reward"] == again.episodes[0]["reward"]
    assert abs(faster.episodes[0]["reward"] - default.episodes[0]["reward"]) > 1.0


def test_the_differential_sortino_reward_reaches_training(tmp_path, splits):
    # The same seeded run with the downside ratio: the config key is accepted and the run's first
    # episode earns other rewards than the default's.
    default = Trainer(tiny_config(episodes=1), splits, tmp_path / "default").train()
    trainer = Trainer(tiny_config(episodes=1, reward_mode="differential_sortino"), splits, tmp_path / "sortino")
    sortino = trainer.train()
    assert trainer.config.reward_mode == "differential_sortino"
    assert np.isfinite(sortino.episodes[0]["reward"])
    assert abs(sortino.episodes[0]["reward"] - default.episodes[0]["reward"]) > 1.0


def test_risk_aversion_reaches_the_training_reward(tmp_path, splits):
    # Without the penalty an episode's reward is its log growth less risk_aversion x the sum of its
    # squared log returns: strictly below the growth once the account has held through a move.
    plain = Trainer(tiny_config(episodes=2, trade_penalty=0.0, reward_mode="log_return"), splits,
                    tmp_path / "plain").train()
    averse = Trainer(tiny_config(episodes=2, trade_penalty=0.0, risk_aversion=50.0, reward_mode="log_return"), splits,
                     tmp_path / "averse").train()
    for episode in plain.episodes:
        assert episode["reward"] == pytest.approx(np.log1p(episode["return"]), abs=1e-6)
    for episode in averse.episodes:
        assert episode["reward"] < np.log1p(episode["return"]) - 1e-6


def test_device_path_is_reproducible_and_resumable(tmp_path, splits):
    full = Trainer(tiny_config(episodes=4, env_backend="torch"), splits, tmp_path / "full")
    full.train()
    resumed = Trainer(tiny_config(episodes=4, env_backend="torch"), splits, tmp_path / "resumed",
                      resume_from=tmp_path / "full" / "checkpoint_ep2.pth")
    resumed.train()
    for a, b in zip(_weights(full.agent), _weights(resumed.agent), strict=True):
        assert torch.equal(a, b)


def test_timeframe_labels():
    from nexlify.training.pipeline import timeframe_label

    assert [timeframe_label(s) for s in (60, 900, 3600, 14_400, 86_400, 30)] == ["1m", "15m", "1h", "4h", "1d", "30s"]


def test_resume_elsewhere_carries_the_best_model_and_uses_this_machines_settings(tmp_path, splits):
    Trainer(tiny_config(episodes=4, num_workers=2), splits, tmp_path / "first").train()
    resumed = Trainer(tiny_config(episodes=6, num_workers=1), splits, tmp_path / "second",
                      resume_from=tmp_path / "first" / "checkpoint_ep4.pth")
    assert (tmp_path / "second" / "best_model.pth").exists()  # the best so far came along
    assert resumed.config.num_workers == 1 and torch.get_num_threads() == 1
    assert resumed.config.episodes == 6
    resumed.train()
    assert resumed.state.episodes_done == 6


def test_evaluate_without_data_rebuilds_the_bundled_test_split(tmp_path):
    from nexlify.training.pipeline import evaluate_model

    run_training(tiny_config(episodes=2, data_days=30), data=None, output_dir=tmp_path, quiet=True)
    results = evaluate_model(tmp_path / "best_model.pth", out_dir=tmp_path / "eval")
    assert results["data"].startswith("test split of bundled")
    saved = json.loads((tmp_path / "training_results.json").read_text())
    assert results["rows"] == saved["run"]["rows"]["test"]
    assert results["test"]["agent"]["final_equity"] == pytest.approx(saved["test"]["agent"]["final_equity"])


@pytest.mark.parametrize("metric", ["sharpe", "final_equity"])
def test_validation_runs_every_eval_interval_and_best_follows_the_metric(tmp_path, splits, metric):
    trainer = Trainer(tiny_config(episodes=6, eval_interval=2, save_interval=2, validation_metric=metric),
                      splits, tmp_path)
    state = trainer.train()
    assert [v["episode"] for v in state.validation] == [2, 4, 6]
    scores = [v[metric] for v in state.validation]
    assert [v["score"] for v in state.validation] == scores
    assert state.best_episode == state.validation[int(np.argmax(scores))]["episode"]


def test_one_round_of_many_accounts_still_validates_every_eval_interval(tmp_path, splits):
    # All six accounts in one round (as on a big GPU): validation still comes at 2, 4 and 6
    # episodes' worth of transitions, and the best model says which point it is.
    trainer = Trainer(tiny_config(episodes=6, parallel_envs=6, save_interval=6, eval_interval=2), splits, tmp_path)
    state = trainer.train()
    assert [v["episode"] for v in state.validation] == [2, 4, 6]
    assert len({v["final_equity"] for v in state.validation}) > 1  # scored at different weights
    best = AdaptiveDQNAgent.from_checkpoint(tmp_path / "best_model.pth")
    assert best.checkpoint_metadata["episodes_done"] == state.best_episode
    assert "trainer_state" not in best.checkpoint_metadata  # a model, not a resume point


def test_trend_feature_set_trains_and_its_model_evaluates_on_new_data(tmp_path):
    from nexlify.training.pipeline import evaluate_model

    frame = synthetic_frame(1300, seed=2)
    results = run_training(tiny_config(episodes=2, feature_set="trend"), data=frame.iloc[:1200],
                           output_dir=tmp_path, quiet=True)
    agent = AdaptiveDQNAgent.from_checkpoint(tmp_path / "best_model.pth")
    assert agent.state_size == 15 + 3 and agent.config.feature_set == "trend"
    assert results["run"]["rows"]["train"] == int((1200 - 720) * 0.7)
    # A file the model never saw: the trend features are rebuilt from the scaler's feature names.
    evaluation = evaluate_model(tmp_path / "best_model.pth", data=frame, out_dir=tmp_path / "eval")
    assert evaluation["rows"] == 1300 - 720


def test_a_slow_start_times_the_other_thread_counts_and_keeps_the_fastest(tmp_path, splits, monkeypatch):
    # A 2-core machine; the profile promised far more than this run achieves.
    monkeypatch.setattr(trainer_module, "detect_cpu", lambda: Cpu(physical_cores=2, logical_cores=2, usable_cores=2))
    trainer = Trainer(tiny_config(episodes=8, parallel_envs=2, num_workers=2), splits, tmp_path)
    trainer.expected_transitions_per_s = 1e12
    threads_seen = []
    real_accounts = trainer_module.Accounts

    def accounts_of_a_new_round(market, num_envs, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return real_accounts(market, num_envs, **kwargs)

    monkeypatch.setattr(trainer_module, "Accounts", accounts_of_a_new_round)
    state = trainer.train()
    kinds = [e["kind"] for e in state.events]
    assert kinds == ["slow_pace", "threads_adapted"]
    # Round 1 only collected (learning_starts), round 2 ran slow at 2 threads, round 3 timed 1 thread.
    assert threads_seen[:3] == [2, 2, 1] and set(threads_seen[3:]) == {trainer.config.num_workers}
    rates = state.episodes
    by_threads = {2: rates[3]["transitions_per_sec"], 1: rates[5]["transitions_per_sec"]}
    assert trainer.config.num_workers == max(by_threads, key=by_threads.get)
    assert trainer.agent.config.num_workers == trainer.config.num_workers == torch.get_num_threads()
    assert "eta_seconds" in state.episodes[-1]["performance"]


def test_a_run_on_pace_keeps_its_threads(tmp_path, splits):
    trainer = Trainer(tiny_config(episodes=4, num_workers=1), splits, tmp_path)
    trainer.expected_transitions_per_s = 1.0
    assert trainer.train().events == [] and trainer.config.num_workers == 1


def test_training_results_record_the_projection_beside_the_actual_time(tmp_path, splits):
    config = tiny_config(episodes=2)
    measured = Measurements((LoopRate("cpu", "tiny", config.batch_size, config.num_workers, 2, 1_000.0),))
    results = run_training(config, splits=splits, output_dir=tmp_path, profile={"benchmarks": measured.to_dict()},
                           quiet=True)
    run = results["run"]
    assert run["projected_train_seconds"] == pytest.approx(2 * (len(splits.train) - 1) / 1_000.0)
    assert run["train_seconds"] > 0
    other = run_training(config.with_overrides({"batch_size": 16}), splits=splits, output_dir=tmp_path / "b",
                         profile={"benchmarks": measured.to_dict()}, quiet=True)
    assert other["run"]["projected_train_seconds"] is None  # a setting the profiler did not measure


def test_a_slow_start_with_a_thread_probe_switches_at_once(tmp_path, splits, monkeypatch):
    # The pipeline gives the trainer a probe that times seconds of the loop per thread count, so a slow
    # run never spends a whole round at a count that may be ten times slower.
    monkeypatch.setattr(trainer_module, "detect_cpu", lambda: Cpu(physical_cores=2, logical_cores=2, usable_cores=2))
    trainer = Trainer(tiny_config(episodes=8, parallel_envs=2, num_workers=2), splits, tmp_path)
    trainer.expected_transitions_per_s = 1e12
    asked = []
    trainer.thread_probe = lambda config, counts: (asked.append((config.num_workers, counts)), {1: 900.0, 2: 100.0})[1]
    state = trainer.train()
    assert asked == [(2, [1, 2])]
    assert [e["kind"] for e in state.events] == ["slow_pace", "threads_adapted"]
    assert "1: 900, 2: 100" in state.events[-1]["message"]
    assert trainer.config.num_workers == trainer.agent.config.num_workers == torch.get_num_threads() == 1


def test_time_thread_counts_measures_the_real_loop_at_each_count():
    from nexlify.hardware.measure import time_thread_counts

    before = torch.get_num_threads()
    rates = time_thread_counts(tiny_config(parallel_envs=4), [1, 2], budget_s=0.2)
    assert set(rates) == {1, 2} and all(r > 0 for r in rates.values())
    assert torch.get_num_threads() == before


def test_train_seconds_count_the_validations_at_round_ends_too(tmp_path, splits, monkeypatch):
    # A clock that moves only while a validation runs: train_seconds must hold all of them, those that
    # fall mid-round and those at the end of a round (eval_interval == parallel_envs: every one).
    clock = [0.0]
    real_evaluate = trainer_module.evaluate_agent

    def slow_evaluate(*args, **kwargs):
        clock[0] += 10.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(trainer_module, "evaluate_agent", slow_evaluate)
    state = Trainer(tiny_config(episodes=4, parallel_envs=2, eval_interval=2), splits, tmp_path).train()
    assert len(state.validation) == 2
    assert state.train_seconds == state.validation_seconds == 20.0
    assert state.checkpoint_seconds == 0.0  # the clock stood still while they were written


def test_training_results_project_with_the_run_costs_and_the_real_validation_length(tmp_path, splits):
    config = tiny_config(episodes=4, eval_interval=3, save_interval=2)
    costs = RunCosts("cpu", "tiny", validation_s=0.5, validation_steps=100, checkpoint_s=0.1,
                     checkpoint_s_per_transition=1e-4, startup_s=2.0)
    measured = Measurements((LoopRate("cpu", "tiny", config.batch_size, config.num_workers, 2, 1_000.0),),
                            run_costs=costs)
    run = run_training(config, splits=splits, output_dir=tmp_path, profile={"benchmarks": measured.to_dict()},
                       quiet=True)["run"]
    steps, bars = len(splits.train) - 1, len(splits.validation) - 1
    # Validations at 3 and where the run ends (4); checkpoints at 2 and 4 with 2 and 4 episodes of replay.
    assert (run["projection"]["validations"], run["projection"]["checkpoints"]) == (2, 2)
    expected = (4 * steps / 1_000.0 + 2 * 0.5 * bars / 100 + 2 * 0.1
                + (min(5_000, 2 * steps) + min(5_000, 4 * steps)) * 1e-4 + 2.0)
    assert run["projected_train_seconds"] == pytest.approx(expected)


def test_kept_snapshots_are_the_validated_models_with_their_scores(tmp_path, splits):
    from nexlify.evaluation.snapshots import run_snapshots
    from nexlify.training.trainer import evaluate_agent

    trainer = Trainer(tiny_config(episodes=4, eval_interval=1, keep_validated_models=True), splits, tmp_path / "kept")
    trainer.train()
    history = trainer.state.validation
    snapshots = run_snapshots(tmp_path / "kept", history)
    assert [s.episode for s in snapshots] == [1, 2, 3, 4]
    best = AdaptiveDQNAgent.from_checkpoint(tmp_path / "kept" / "best_model.pth")
    for snapshot in snapshots:
        agent = AdaptiveDQNAgent.from_checkpoint(snapshot.path)
        assert agent.checkpoint_metadata["validation_score"] == snapshot.score
        # Scored again on the validation split, the kept model is the one that earned the score.
        rescored = evaluate_agent(agent, splits.validation, splits.periods_per_year, trainer.config).metrics
        assert rescored[trainer.config.validation_metric] == pytest.approx(snapshot.score)
        if snapshot.episode == trainer.state.best_episode:
            assert all(torch.equal(a, b) for a, b in zip(_weights(agent), _weights(best), strict=True))
    Trainer(tiny_config(episodes=2, eval_interval=1), splits, tmp_path / "default").train()
    assert not list((tmp_path / "default").glob("validated_ep*.pth"))  # off by default: only the best is kept


def test_validating_twice_an_episode_adds_half_episode_snapshots_without_changing_training(tmp_path, splits):
    """eval_interval 0.5: a validation at every half episode's worth of transitions, labelled in episodes
    (0.5, 1, 1.5, ...). Validation only reads the policy, so the whole-episode checks score exactly
    what a once-an-episode run's do, and the final weights are the same."""
    from nexlify.evaluation.snapshots import run_snapshots

    halves = Trainer(tiny_config(episodes=2, eval_interval=0.5, keep_validated_models=True), splits,
                     tmp_path / "halves")
    halves.train()
    whole = Trainer(tiny_config(episodes=2, eval_interval=1), splits, tmp_path / "whole")
    whole.train()
    episodes = [v["episode"] for v in halves.state.validation]
    assert episodes == [0.5, 1, 1.5, 2] and [type(e) for e in episodes] == [float, int, float, int]
    assert [v["score"] for v in halves.state.validation][1::2] == [v["score"] for v in whole.state.validation]
    assert all(torch.equal(a, b) for a, b in zip(_weights(halves.agent), _weights(whole.agent), strict=True))
    snapshots = run_snapshots(tmp_path / "halves", halves.state.validation)
    assert [s.path.name for s in snapshots] == ["validated_ep0.5.pth", "validated_ep1.pth", "validated_ep1.5.pth",
                                                "validated_ep2.pth"]
    best = max(halves.state.validation, key=lambda v: v["score"])  # ties: the earlier, as the trainer keeps
    assert halves.state.best_episode == best["episode"]


def test_eval_interval_takes_fractions_and_keeps_whole_numbers_whole():
    from nexlify.config import TrainingConfig
    from nexlify.errors import ConfigError

    assert TrainingConfig().with_overrides({"eval_interval": 0.5}).eval_interval == 0.5
    whole = TrainingConfig().with_overrides({"eval_interval": 2.0}).eval_interval
    assert whole == 2 and isinstance(whole, int)  # results and file names read as before
    with pytest.raises(ConfigError, match="eval_interval"):
        TrainingConfig().with_overrides({"eval_interval": 0.001})
