"""The action set: the one place that says which actions exist and how many there are.

The trading step (``nexlify.env.accounts``) takes orders: 0 hold, 1 buy (all cash), 2 sell (all
units), 3 buy half (one half-step up: half the equity's worth of cash from flat, the rest from half)
and 4 sell half (one half-step down: half the units from long, the rest from half). Every account
holds a position *level*, 0 (flat), 0.5 (half) or 1 (long); the half orders are the only way to
reach 0.5. The agent chooses in one of three action modes (config key ``action_mode``):

* ``toggle`` (default): the agent's actions are the orders hold / buy / sell (``N_ACTIONS`` = 3).
* ``target``: the agent names the position it wants, 0 flat or 1 long (2 actions); ``to_orders``
  turns that into the order that gets there (buy when flat and long is wanted, sell when long and
  flat is wanted, else hold). Every action is then valid, and holding is the same action as
  entering, so the agent never has to learn that "buy while long" does nothing.
* ``target_half``: the same with three positions, 0 flat, 1 half, 2 long (``TARGET_HALF_LEVELS``),
  so the agent can size its bet: a half position earns half the move for half the risk.

Everything that needs the number of actions (the Gymnasium spaces, the agent's output layer, random
policies) reads ``N_ACTIONS`` or ``n_actions(mode)`` from here.
"""

from __future__ import annotations

from typing import Any

from nexlify.config import ACTION_MODES

HOLD, BUY, SELL, BUY_HALF, SELL_HALF = 0, 1, 2, 3, 4
ACTION_NAMES: tuple[str, ...] = ("hold", "buy", "sell")
ORDER_NAMES: tuple[str, ...] = (*ACTION_NAMES, "buy_half", "sell_half")
N_ACTIONS: int = len(ACTION_NAMES)
FLAT, LONG = 0, 1
TARGET_NAMES: tuple[str, ...] = ("flat", "long")
TARGET_HALF_NAMES: tuple[str, ...] = ("flat", "half", "long")
TARGET_HALF_LEVELS: tuple[float, ...] = (0.0, 0.5, 1.0)
HALF = 0.5  # the step of the half orders
__all__ = ["ACTION_MODES", "ACTION_NAMES", "BUY", "BUY_HALF", "FLAT", "HALF", "HOLD", "LONG", "N_ACTIONS",
           "ORDER_NAMES", "SELL", "SELL_HALF", "TARGET_HALF_LEVELS", "TARGET_HALF_NAMES", "TARGET_NAMES",
           "n_actions", "to_orders"]


def n_actions(mode: str) -> int:
    """How many actions the agent chooses among in ``mode``."""
    if mode == "target_half":
        return len(TARGET_HALF_NAMES)
    return len(TARGET_NAMES) if mode == "target" else N_ACTIONS


def to_orders(actions: Any, position: Any, mode: str, where: Any = None) -> Any:
    """The orders that carry out the agent's ``actions`` for accounts at position level ``position``
    (0 flat, 0.5 half, 1 long; a bool "is long" flag works for the two all-in modes). Works on Python
    values (``where=None``), numpy arrays and torch tensors (pass ``np.where`` or ``torch.where``)."""
    if mode == "toggle":
        return actions
    if mode == "target_half":
        # The level wanted minus the level held, in half-steps: -2 .. +2.
        steps = actions - position * 2
        if where is None:
            return {-2: SELL, -1: SELL_HALF, 0: HOLD, 1: BUY_HALF, 2: BUY}[round(steps)]
        return where(steps > 1.5, BUY, where(steps > 0.5, BUY_HALF, where(
            steps < -1.5, SELL, where(steps < -0.5, SELL_HALF, HOLD))))
    is_long = position > 0
    if where is None:
        if actions == LONG:
            return HOLD if is_long else BUY
        return SELL if is_long else HOLD
    return where(actions == LONG, where(is_long, HOLD, BUY), where(is_long, SELL, HOLD))
