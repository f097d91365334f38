"""Staggered episode starts (config key ``episode_start``): the training window as a loop, the accounts
of a round starting evenly spaced around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import random_walk_slice, synthetic_frame, tiny_config
from nexlify.config import TrainingConfig
from nexlify.data.market import prepare_market
from nexlify.env.accounts import Accounts, window_starts
from nexlify.env.actions import BUY, HOLD
from nexlify.errors import ConfigError
from nexlify.training.trainer import Trainer

LOOP = 100  # rows of the test market


def rows(accounts: Accounts, values) -> np.ndarray:
    return np.asarray(accounts.xp.to_list(values))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_rounds_accounts_start_evenly_spaced_from_a_seeded_phase(backend: str) -> None:
    accounts = Accounts(random_walk_slice(LOOP, seed=1), 4, staggered=True, window_seed=9, backend=backend)
    phase = int(window_starts(9, np.zeros(1, np.int64), np.zeros(1, np.int64), LOOP)[0])
    expected = (phase + np.array([0, 25, 50, 75])) % LOOP
    np.testing.assert_array_equal(rows(accounts, accounts.t), expected)
    np.testing.assert_array_equal(rows(accounts, accounts.end), expected + LOOP - 1)  # a whole pass each
    other = Accounts(random_walk_slice(LOOP, seed=1), 4, staggered=True, window_seed=10, backend=backend)
    assert not np.array_equal(rows(other, other.t), expected)  # the seed moves the phase


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_every_account_walks_each_row_of_the_loop_once_per_episode(backend: str) -> None:
    accounts = Accounts(random_walk_slice(LOOP, seed=2), 3, staggered=True, window_seed=4, backend=backend)
    starts = rows(accounts, accounts.t)
    seen: list[np.ndarray] = []
    hold = accounts.xp.vector(np.full(3, HOLD), "int64")
    for step in range(LOOP - 1):
        seen.append(rows(accounts, accounts.t) % LOOP)
        truncated = rows(accounts, accounts.step(hold).truncated)
        assert truncated.all() if step == LOOP - 2 else not truncated.any()
    visited = np.stack(seen, axis=1)
    for account in range(3):  # LOOP - 1 observations: every row but the one before its start
        assert sorted(visited[account]) == sorted(set(range(LOOP)) - {(starts[account] - 1) % LOOP})
    # The next episode starts at a new phase, the accounts still a third of the loop apart.
    again = rows(accounts, accounts.t)
    phase = int(window_starts(4, np.zeros(1, np.int64), np.ones(1, np.int64), LOOP)[0])
    np.testing.assert_array_equal(again, (phase + np.array([0, 33, 66])) % LOOP)


def test_the_step_across_the_loops_end_moves_by_the_first_bar_only() -> None:
    market = random_walk_slice(LOOP, seed=3)
    accounts = Accounts(market, 1, staggered=True, window_seed=0, fee=0.0, slippage=0.0)
    # The row after the last is the first, priced so it opens where the last closed (as markets join).
    assert accounts.open[LOOP] == pytest.approx(market.close[-1], rel=1e-12)
    assert accounts.close[LOOP] / accounts.open[LOOP] == pytest.approx(market.close[0] / market.open[0], rel=1e-12)
    np.testing.assert_array_equal(accounts._obs_rows[LOOP, : market.features.shape[1]], market.features[0])
    # An account long at the last row's close and held across the join earns the first bar's own
    # move: the join removes the gap from the last close to the first open.
    accounts.t[:] = LOOP - 2
    accounts.end[:] = LOOP + 5
    accounts.step(np.array([BUY]))  # filled at the open of the last row, marked at its close
    before = float(accounts.equity[0])
    accounts.step(np.array([HOLD]))  # the step from the last row to the first
    assert float(accounts.equity[0]) / before == pytest.approx(market.close[0] / market.open[0], rel=1e-12)


def test_staggered_needs_an_array_backend_and_a_known_key() -> None:
    with pytest.raises(ConfigError, match="random or staggered episode windows need the numpy or torch backend"):
        Accounts(random_walk_slice(LOOP), 1, staggered=True, backend="python")
    with pytest.raises(ConfigError, match="episode_start must be one of first, staggered"):
        TrainingConfig(episode_start="random")
    assert TrainingConfig().episode_start == "first"
    assert TrainingConfig.from_dict({"episodes": 3}).episode_start == "first"  # configs saved before the key


def test_staggered_random_windows_start_evenly_spaced_and_may_wrap() -> None:
    accounts = Accounts(random_walk_slice(LOOP, seed=1), 5, episode_bars=30, staggered=True, window_seed=2)
    starts = accounts.t.copy()
    assert sorted((starts - starts.min()) % LOOP) == [0, 20, 40, 60, 80]
    np.testing.assert_array_equal(accounts.end - starts, 30)
    hold = np.full(5, HOLD)
    for _ in range(30):
        step = accounts.step(hold)
    assert step.truncated.all()


def _first_round_states(tmp_path, episode_start: str) -> tuple[Trainer, np.ndarray]:
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)
    trainer = Trainer(tiny_config(episodes=4, parallel_envs=4, episode_start=episode_start), splits,
                      tmp_path / episode_start)
    trainer.train()
    states = trainer.agent.replay.states[:4].float().cpu().numpy()  # the four accounts' first observations
    return trainer, states[:, : splits.train.features.shape[1]]


def test_a_staggered_training_round_stores_different_rows_side_by_side(tmp_path) -> None:
    lockstep, first_states = _first_round_states(tmp_path, "first")
    staggered, staggered_states = _first_round_states(tmp_path, "staggered")
    # Lockstep: the four accounts' first transitions are the same bar; staggered: four different bars.
    assert all(np.array_equal(first_states[0], s) for s in first_states[1:])
    assert len({s.tobytes() for s in staggered_states}) == 4
    # The same workload either way: four whole passes of the window.
    window_steps = len(lockstep.splits.train) - 1
    assert lockstep.state.transitions == staggered.state.transitions == 4 * window_steps


def test_a_staggered_training_run_is_deterministic_for_a_seed(tmp_path) -> None:
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)

    def weights(folder: str) -> list[torch.Tensor]:
        trainer = Trainer(tiny_config(episodes=4, episode_start="staggered"), splits, tmp_path / folder)
        trainer.train()
        return [p.detach().clone() for p in trainer.agent.q_network.parameters()]

    for a, b in zip(weights("a"), weights("b"), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
