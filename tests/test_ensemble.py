"""Ensembles across seeds: hand-computed mean-Q and vote decisions, determinism, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import random_walk_slice
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import run_policy
from nexlify.evaluation.ensemble import combine_q_values, ensemble_policy


def test_mean_q_and_vote_by_hand() -> None:
    # Three members, two states, three actions.
    q = np.array([
        [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.0, 5.0, 0.0], [0.0, 0.0, 1.5]],
    ])
    # Mean Q: state 0 -> [2/3, 5/3, 0] -> action 1; state 1 -> [0, 2/3, 5/6] -> action 2.
    np.testing.assert_array_equal(combine_q_values(q, "mean_q"), [1, 2])
    # Votes: state 0 -> action 0 twice, action 1 once -> 0 (against the mean-Q choice);
    # state 1 -> action 1 once, action 2 twice -> 2.
    np.testing.assert_array_equal(combine_q_values(q, "vote"), [0, 2])


def test_vote_ties_go_to_the_higher_mean_q_then_the_lower_action() -> None:
    q = np.array([
        [[3.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
        [[0.0, 0.0, 4.0], [0.0, 1.0, 0.0]],
    ])
    # State 0: one vote each for 0 and 2; mean Q 1.5 vs 2.0 -> 2. State 1: tie on votes and on
    # mean Q (0.5 each) -> the lower index, 0.
    np.testing.assert_array_equal(combine_q_values(q, "vote"), [2, 0])
    with pytest.raises(ConfigError, match="ensemble mode must be one of mean_q, vote"):
        combine_q_values(q, "median")


def _agents(seeds, state_size=12, action_size=3):
    return [AdaptiveDQNAgent(state_size, action_size, TrainingConfig(model_size="tiny", seed=s)) for s in seeds]


@pytest.mark.parametrize("mode", ["mean_q", "vote"])
def test_ensemble_backtest_is_deterministic_for_its_seeds(mode) -> None:
    market = random_walk_slice(200, seed=3)
    first = run_policy(market, ensemble_policy(_agents([1, 2, 3]), mode), "ensemble", 8760.0)
    again = run_policy(market, ensemble_policy(_agents([1, 2, 3]), mode), "ensemble", 8760.0)
    np.testing.assert_array_equal(first.actions, again.actions)
    np.testing.assert_array_equal(first.equity, again.equity)
    # It is the members' Q-values that decide: the policy equals combine_q_values on them.
    members = _agents([1, 2, 3])
    obs = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    q = np.stack([m.host_q_function()(obs) for m in members])
    np.testing.assert_array_equal(ensemble_policy(members, mode)(obs, 0), combine_q_values(q, mode))
    # A one-member ensemble is that member's greedy policy.
    np.testing.assert_array_equal(ensemble_policy(members[:1], mode)(obs, 0), members[0].act(obs, explore=False))


def test_members_must_match() -> None:
    with pytest.raises(ConfigError, match="differ in"):
        ensemble_policy(_agents([1]) + _agents([2], state_size=18))
    with pytest.raises(ConfigError, match="at least one"):
        ensemble_policy([])


# --- consensus: switch only when every member would ------------------------------------------
def test_consensus_orders_by_hand() -> None:
    from nexlify.env.actions import BUY, FLAT, HOLD, LONG, SELL
    from nexlify.evaluation.ensemble import consensus_orders

    is_long = np.array([False, False, False, True, True])
    # Toggle actions are orders; sell while flat (and buy while long) do nothing, so they do not switch.
    members = np.array([[BUY, BUY, SELL, SELL, SELL],
                        [BUY, HOLD, HOLD, SELL, BUY]])
    np.testing.assert_array_equal(consensus_orders(members, is_long, "toggle"), [BUY, HOLD, HOLD, SELL, HOLD])
    # Target actions name positions: long for a flat account is a buy, flat for a long one a sell.
    targets = np.array([[LONG, LONG, FLAT, FLAT, LONG],
                        [LONG, FLAT, FLAT, FLAT, FLAT]])
    np.testing.assert_array_equal(consensus_orders(targets, is_long, "target"), [BUY, HOLD, HOLD, SELL, HOLD])


def test_consensus_policy_follows_the_members_greedy_actions() -> None:
    from nexlify.evaluation.backtest import long_positions
    from nexlify.evaluation.ensemble import consensus_orders

    members = _agents([1, 2, 3])
    obs = np.random.default_rng(1).standard_normal((64, 12)).astype(np.float32)
    obs[:, 9] = np.arange(64) % 2  # the position flag: half the accounts long
    choices = np.stack([m.act(obs, explore=False) for m in members])
    orders = ensemble_policy(members, "consensus")(obs, 0)
    np.testing.assert_array_equal(orders, consensus_orders(choices, long_positions(obs), "toggle"))
    # One member: its own greedy orders, except the no-op ones, which become holds.
    single = ensemble_policy(members[:1], "consensus")(obs, 0)
    own = members[0].act(obs, explore=False)
    noop = ((own == 1) & (obs[:, 9] > 0.5)) | ((own == 2) & (obs[:, 9] <= 0.5))
    np.testing.assert_array_equal(single, np.where(noop, 0, own))
    with pytest.raises(ConfigError, match="positions"):
        combine_q_values(np.zeros((2, 3, 3)), "consensus")
    market = random_walk_slice(200, seed=3)
    first = run_policy(market, ensemble_policy(_agents([1, 2, 3]), "consensus"), "ensemble", 8760.0)
    again = run_policy(market, ensemble_policy(_agents([1, 2, 3]), "consensus"), "ensemble", 8760.0)
    np.testing.assert_array_equal(first.equity, again.equity)
