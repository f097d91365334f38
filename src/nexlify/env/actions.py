"""The action set: the one place that says which actions exist and how many there are.

The trading step (``nexlify.env.accounts``) takes orders: 0 hold, 1 buy (all cash), 2 sell (all
units). The agent chooses in one of two action modes (config key ``action_mode``):

* ``toggle`` (default): the agent's actions are the orders themselves (``N_ACTIONS`` = 3).
* ``target``: the agent names the position it wants, 0 flat or 1 long (2 actions); ``to_orders``
  turns that into the order that gets there (buy when flat and long is wanted, sell when long and
  flat is wanted, else hold). Every action is then valid, and holding is the same action as
  entering, so the agent never has to learn that "buy while long" does nothing.

Everything that needs the number of actions (the Gymnasium spaces, the agent's output layer, random
policies) reads ``N_ACTIONS`` or ``n_actions(mode)`` from here.
"""

from __future__ import annotations

from typing import Any

from nexlify.config import ACTION_MODES

HOLD, BUY, SELL = 0, 1, 2
ACTION_NAMES: tuple[str, ...] = ("hold", "buy", "sell")
N_ACTIONS: int = len(ACTION_NAMES)
FLAT, LONG = 0, 1
TARGET_NAMES: tuple[str, ...] = ("flat", "long")
__all__ = ["ACTION_MODES", "ACTION_NAMES", "BUY", "FLAT", "HOLD", "LONG", "N_ACTIONS", "SELL", "TARGET_NAMES",
           "n_actions", "to_orders"]


def n_actions(mode: str) -> int:
    """How many actions the agent chooses among in ``mode``."""
    return len(TARGET_NAMES) if mode == "target" else N_ACTIONS


def to_orders(actions: Any, is_long: Any, mode: str, where: Any = None) -> Any:
    """The orders (hold / buy / sell) that carry out the agent's ``actions`` for accounts that are
    long where ``is_long``. Works on Python values (``where=None``), numpy arrays and torch tensors
    (pass ``np.where`` or ``torch.where``)."""
    if mode != "target":
        return actions
    if where is None:
        if actions == LONG:
            return HOLD if is_long else BUY
        return SELL if is_long else HOLD
    return where(actions == LONG, where(is_long, HOLD, BUY), where(is_long, SELL, HOLD))
