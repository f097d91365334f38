"""Backtests: run a policy over a market slice with the real trading step, and the baselines.

Every policy, the agent's and the baselines', trades through the same accounts (``Accounts``, the
trading step of the training environments) with the same fees and slippage, so the comparison is
fair. Baselines: buy-and-hold, staying in cash, a random policy (mean over several seeds) and a
moving-average crossover (fast 20 / slow 50 candles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nexlify.data.market import MarketSlice
from nexlify.env.accounts import Accounts
from nexlify.env.actions import BUY, HOLD, N_ACTIONS, SELL, to_orders
from nexlify.evaluation.metrics import compute_metrics

Policy = Callable[[np.ndarray, int], np.ndarray]
"""A policy maps observations (N, state_size) and the step index to N actions."""

MA_FAST, MA_SLOW = 20, 50
RANDOM_SEEDS = 10


@dataclass
class BacktestResult:
    """Equity and position of each account after every step, and the metrics of each."""

    name: str
    equity: np.ndarray  # (accounts, steps + 1)
    position: np.ndarray  # (accounts, steps + 1): the position level, 0 flat, 0.5 half, 1 long
    actions: np.ndarray  # (accounts, steps)
    timestamps: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)  # mean over accounts


def run_policy(
    market: MarketSlice,
    policy: Policy,
    name: str,
    periods_per_year: float,
    num_accounts: int = 1,
    initial_balance: float = 10_000.0,
    fee: float = 0.001,
    slippage: float = 0.0005,
    backend: str | None = None,
) -> BacktestResult:
    """Run ``policy`` from the first to the last row of ``market`` for ``num_accounts`` accounts.

    ``backend`` (``Accounts``'): None picks python for one account, numpy for several. The python
    backend's scalar step costs about half of numpy's on arrays of one, and the agent's own backtests
    (every validation, every test) are one account; both give the same numbers.
    """
    backend = backend or ("python" if num_accounts == 1 else "numpy")
    single = backend == "python"
    # Half orders accepted: a target_half agent's policy sends them, and a backtest is not the hot loop.
    accounts = Accounts(market, num_accounts, initial_balance=initial_balance, fee=fee, slippage=slippage,
                        half_orders=True, backend=backend)
    steps = len(market) - 1
    equity = np.empty((num_accounts, steps + 1))
    position = np.zeros((num_accounts, steps + 1))
    actions = np.zeros((num_accounts, steps), dtype=np.int8)
    fees = np.zeros(num_accounts)
    trades = np.zeros(num_accounts, dtype=np.int64)
    equity[:, 0] = initial_balance
    alive = np.ones(num_accounts, dtype=bool)  # a ruined account stops trading and keeps its equity
    rows = (lambda obs: obs[None]) if single else (lambda obs: obs)  # policies see (accounts, features)
    obs = rows(accounts.reset())
    for t in range(steps):
        chosen = np.asarray(policy(obs, t), dtype=np.int64)
        chosen = np.where(alive, chosen, HOLD)
        # One pass over the market: nothing to reset.
        _, terminated, _ = accounts.advance(int(chosen[0]) if single else chosen)
        obs, info = rows(accounts.observe()), accounts.info()
        actions[:, t] = chosen
        equity[:, t + 1] = np.where(alive, info["equity"], equity[:, t])
        position[:, t + 1] = np.where(alive, info["level"], position[:, t])
        fees = np.where(alive, info["fees_paid"], fees)
        trades = np.where(alive, info["trades"], trades)
        alive &= ~np.asarray(terminated, dtype=bool)
    per_account = [
        compute_metrics(equity[i], position[i], periods_per_year, fees[i], int(trades[i]))
        for i in range(num_accounts)
    ]
    metrics = {key: float(np.mean([m[key] for m in per_account])) for key in per_account[0]}
    return BacktestResult(name, equity, position, actions, market.timestamps, metrics)


def agent_policy(agent: Any) -> Policy:
    """The agent's greedy policy (no exploration) with its weights as they are now, as orders (a
    ``target`` agent's wanted position becomes the order that reaches it).

    The Q-function runs in numpy on the host (``host_q_function``): a backtest steps bar by bar, and a
    GPU round trip per bar would cost more than the whole forward pass.
    """
    q_function = agent.host_q_function()
    mode = agent.config.action_mode

    def policy(obs: np.ndarray, _t: int) -> np.ndarray:
        chosen = q_function(np.ascontiguousarray(obs, dtype=np.float32)).argmax(axis=1)
        return to_orders(chosen, position_levels(obs), mode, np.where)

    return policy


def position_levels(obs: np.ndarray) -> np.ndarray:
    """Each account's position level (0 flat, 0.5 half, 1 long), read from its observation (the first
    account feature; see nexlify.data.features)."""
    from nexlify.data.features import ACCOUNT_FEATURE_NAMES

    return obs[:, obs.shape[1] - len(ACCOUNT_FEATURE_NAMES)].astype(np.float64)


def long_positions(obs: np.ndarray) -> np.ndarray:
    """Which accounts hold any position, read from their observations."""
    return position_levels(obs) > 0.0


def buy_and_hold_policy(obs: np.ndarray, t: int) -> np.ndarray:
    return np.full(len(obs), BUY if t == 0 else HOLD)


def cash_policy(obs: np.ndarray, t: int) -> np.ndarray:
    return np.full(len(obs), HOLD)


def random_policy(seed: int) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs, _t: rng.integers(0, N_ACTIONS, size=len(obs))


def moving_average_policy(close: np.ndarray, fast: int = MA_FAST, slow: int = MA_SLOW) -> Policy:
    """Long while the fast simple moving average of closes is above the slow one (causal)."""
    sums = np.concatenate([[0.0], np.cumsum(close)])
    idx = np.arange(len(close))
    fast_ma = np.where(idx >= fast - 1, (sums[idx + 1] - sums[np.maximum(idx + 1 - fast, 0)]) / fast, np.nan)
    slow_ma = np.where(idx >= slow - 1, (sums[idx + 1] - sums[np.maximum(idx + 1 - slow, 0)]) / slow, np.nan)
    want_long = np.nan_to_num(fast_ma > slow_ma, nan=0.0).astype(bool)

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        long_now = long_positions(obs)
        action = np.where(want_long[t] & ~long_now, BUY, HOLD)
        return np.where(~want_long[t] & long_now, SELL, action)

    return policy


def run_baselines(
    market: MarketSlice,
    periods_per_year: float,
    initial_balance: float = 10_000.0,
    fee: float = 0.001,
    slippage: float = 0.0005,
    random_seeds: int = RANDOM_SEEDS,
) -> dict[str, BacktestResult]:
    """Backtest every baseline on ``market`` with the same costs."""
    costs = {"initial_balance": initial_balance, "fee": fee, "slippage": slippage}
    results = {
        "buy_and_hold": run_policy(market, buy_and_hold_policy, "buy_and_hold", periods_per_year, **costs),
        "cash": run_policy(market, cash_policy, "cash", periods_per_year, **costs),
        "random": run_policy(market, random_policy(0), "random", periods_per_year,
                             num_accounts=random_seeds, **costs),
        "ma_crossover": run_policy(market, moving_average_policy(market.close), "ma_crossover",
                                   periods_per_year, **costs),
    }
    return results
