"""The action set: the one place that says which actions exist and how many there are.

Everything that needs the number of actions (the Gymnasium spaces, the agent's output layer, random
policies) reads ``N_ACTIONS`` from here.
"""

from __future__ import annotations

HOLD, BUY, SELL = 0, 1, 2
ACTION_NAMES: tuple[str, ...] = ("hold", "buy", "sell")
N_ACTIONS: int = len(ACTION_NAMES)
