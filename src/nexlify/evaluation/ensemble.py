"""Ensembles of trained agents (typically one per seed) acting as one greedy policy.

Seeds of the same configuration disagree most where the data says least; combining them cuts the
variance of the policy without more training data. Three ways to combine:

* ``mean_q``: the action with the highest Q-value averaged over the members;
* ``vote``: the action most members choose greedily; a tie goes to the tied action with the highest
  mean Q-value (and then to the lowest action index), so the result never depends on chance;
* ``consensus``: the position changes only when every member's greedy action would change it the
  same way (buy when flat, sell when long); otherwise the ensemble holds. Disagreement among the seeds is
  uncertainty, and a switch costs fees for sure, so it waits until they agree.

All three are pure functions of the members' weights: the same members give the same actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nexlify.env.actions import BUY, HOLD, SELL, to_orders
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import position_levels
from nexlify.evaluation.defaults import ENSEMBLE_MODES

QFunction = Callable[[np.ndarray], np.ndarray]
"""Maps float32 states ``(N, state_size)`` to Q-values ``(N, actions)``."""


def combine_q_values(q_values: np.ndarray, mode: str) -> np.ndarray:
    """Greedy ensemble actions (int64, shape ``(N,)``) from members' Q-values ``(members, N, actions)``."""
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}; got {mode!r}")
    if mode == "consensus":
        raise ConfigError("the consensus ensemble decides from the accounts' positions; use ensemble_policy "
                          "(or consensus_orders) instead of combining Q-values alone")
    q_values = np.asarray(q_values, dtype=np.float64)
    mean_q = q_values.mean(axis=0)
    if mode == "mean_q":
        return mean_q.argmax(axis=1).astype(np.int64)
    n_actions = q_values.shape[2]
    choices = q_values.argmax(axis=2)  # (members, N)
    votes = np.stack([(choices == a).sum(axis=0) for a in range(n_actions)], axis=1)  # (N, actions)
    # Among the actions with the most votes, the highest mean Q wins; argmax keeps the lowest index
    # on an exact tie.
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, mean_q, -np.inf).argmax(axis=1).astype(np.int64)


def consensus_orders(member_actions: np.ndarray, position: np.ndarray, action_mode: str) -> np.ndarray:
    """The ``consensus`` ensemble's orders (int64, ``(N,)``) from each member's greedy actions
    ``(members, N)`` for accounts at position level ``position`` (or a bool "is long"): an order that
    moves the position goes out only if every member's actions give that same order; otherwise hold."""
    position = np.asarray(position, dtype=np.float64)
    orders = np.stack([to_orders(actions, position, action_mode, np.where) for actions in member_actions])
    # A toggle member's buy while long (or sell while flat) moves nothing: it counts as a hold.
    moves = np.where(orders == BUY, position < 1.0, np.where(orders == SELL, position > 0.0, orders != HOLD))
    effective = np.where(moves, orders, HOLD)
    return np.where((effective == effective[0]).all(axis=0), effective[0], HOLD).astype(np.int64)


def check_members(agents: Sequence[Any]) -> str:
    """The members' common action mode; ConfigError unless they see the same state and choose among
    the same actions the same way (an ensemble of other models' Q-values means nothing)."""
    if not agents:
        raise ConfigError("an ensemble needs at least one trained agent")
    shapes = {(a.state_size, a.action_size) for a in agents}
    if len(shapes) != 1:
        raise ConfigError(f"ensemble members differ in (state size, action count): {sorted(shapes)}; "
                          "combine only models trained with the same feature set and actions")
    modes = {agent.config.action_mode for agent in agents}
    if len(modes) != 1:
        raise ConfigError(f"ensemble members use different action modes {sorted(modes)}")
    return modes.pop()


def greedy_actions(q_functions: Sequence[QFunction], states: np.ndarray, mode: str = "mean_q") -> np.ndarray:
    """The greedy actions (int64, ``(N,)``) of one member, or of several combined by ``mode`` (one
    member's own argmax is what either mode gives it)."""
    states = np.ascontiguousarray(states, dtype=np.float32)
    if len(q_functions) == 1:
        return q_functions[0](states).argmax(axis=1).astype(np.int64)
    return combine_q_values(np.stack([q(states) for q in q_functions]), mode)


def ensemble_policy(agents: Sequence[Any], mode: str = "mean_q") -> Callable[[np.ndarray, int], np.ndarray]:
    """A backtest policy (``obs, t -> orders``) acting greedily for the ensemble of ``agents``.

    Every member must see the same state and choose among the same actions.
    """
    action_mode = check_members(agents)
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}; got {mode!r}")
    q_functions: list[QFunction] = [agent.host_q_function() for agent in agents]

    def policy(obs: np.ndarray, _t: int) -> np.ndarray:
        states = np.ascontiguousarray(obs, dtype=np.float32)
        if mode == "consensus":
            choices = np.stack([q(states).argmax(axis=1) for q in q_functions])
            return consensus_orders(choices, position_levels(states), action_mode)
        return to_orders(greedy_actions(q_functions, states, mode), position_levels(states), action_mode,
                         np.where)

    return policy
