"""N trading accounts on one market, stepped together as arrays (no Python loop over accounts).

``VectorTradingEnv`` is a Gymnasium ``VectorEnv`` on numpy arrays. ``TorchVectorTradingEnv`` runs
the same arithmetic on torch tensors on any device, so on a GPU the environments, the network and
the replay memory all stay on the device. Both use the formulas of ``nexlify.env.portfolio`` and
``nexlify.env.rewards``, so each account follows exactly the trajectory of a single
``TradingEnvironment`` fed the same actions.

Autoreset is "same step": when an account's episode ends, the observation returned for it is the
first observation of its next episode, and the real last observation is in ``info['final_obs']``
(rows where ``info['_final_obs']`` is True).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from nexlify.config import REWARD_MODES
from nexlify.data.features import ACCOUNT_FEATURE_NAMES, FeatureScaler
from nexlify.data.market import MarketSlice
from nexlify.env.portfolio import buy_fill, sell_fill
from nexlify.env.rewards import differential_sharpe_step
from nexlify.env.trading import BUY, SELL, resolve_market
from nexlify.errors import ConfigError


class _Accounts:
    """Array state of N accounts and the step arithmetic, for numpy (xp=np) or torch (xp=torch)."""

    def __init__(self, market: MarketSlice, num_envs: int, initial_balance: float, fee: float,
                 slippage: float, reward_mode: str, ruin_fraction: float, xp: Any, device: Any) -> None:
        self.xp, self.device = xp, device
        self.n = num_envs
        self.initial_balance, self.fee, self.slippage = float(initial_balance), fee, slippage
        self.reward_mode, self.ruin_fraction = reward_mode, ruin_fraction
        self.length = len(market)
        self.open = self._array(market.open, "float64")
        self.close = self._array(market.close, "float64")
        self.n_market = market.features.shape[1]
        self.obs_size = self.n_market + len(ACCOUNT_FEATURE_NAMES)
        # Zero-padded so one gather yields whole observation rows; the account columns are filled after.
        padded = np.zeros((len(market), self.obs_size), dtype=np.float32)
        padded[:, : self.n_market] = market.features
        self.obs_rows = self._array(padded, "float32")
        self.t = self._zeros("int64")
        self.cash = self._zeros("float64")
        self.units = self._zeros("float64")
        self.entry = self._zeros("float64")
        self.equity = self._zeros("float64")
        self.peak = self._zeros("float64")
        self.fees_paid = self._zeros("float64")
        self.slippage_paid = self._zeros("float64")
        self.trades = self._zeros("int64")
        self.invalid = self._zeros("int64")
        self.dsr_mean = self._zeros("float64")
        self.dsr_mean_square = self._zeros("float64")
        self.reset_rows(self._ones_mask())

    # --- backend helpers: the few places numpy and torch spell things differently ---
    def _dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def _array(self, values: Any, dtype: str) -> Any:
        if self.xp is np:
            return np.ascontiguousarray(values, dtype=dtype)
        return torch.as_tensor(np.asarray(values), dtype=self._dtype(dtype), device=self.device)

    def _zeros(self, dtype: str) -> Any:
        if self.xp is np:
            return np.zeros(self.n, dtype=dtype)
        return torch.zeros(self.n, dtype=self._dtype(dtype), device=self.device)

    def _ones_mask(self) -> Any:
        if self.xp is np:
            return np.ones(self.n, dtype=bool)
        return torch.ones(self.n, dtype=torch.bool, device=self.device)

    def reset_rows(self, mask: Any) -> None:
        """Start a fresh episode for the accounts where ``mask`` is True."""
        where = self.xp.where
        self.t = where(mask, 0, self.t)
        self.cash = where(mask, self.initial_balance, self.cash)
        for name in ("units", "entry", "fees_paid", "slippage_paid", "dsr_mean", "dsr_mean_square"):
            setattr(self, name, where(mask, 0.0, getattr(self, name)))
        self.trades = where(mask, 0, self.trades)
        self.invalid = where(mask, 0, self.invalid)
        self.equity = where(mask, self.initial_balance, self.equity)
        self.peak = where(mask, self.initial_balance, self.peak)

    def observe(self) -> Any:
        """Observations of all accounts: market features of row t plus the account features."""
        xp = self.xp
        obs = self.obs_rows[self.t]
        is_long = self.units > 0.0
        price = self.close[self.t]
        safe_entry = xp.where(is_long, self.entry, 1.0)
        obs[:, self.n_market] = is_long
        obs[:, self.n_market + 1] = xp.where(is_long, price / safe_entry - 1.0, 0.0)
        obs[:, self.n_market + 2] = self.equity / self.peak - 1.0
        return obs

    def step(self, actions: Any) -> tuple[Any, Any, Any]:
        """Apply one action per account; returns (reward, terminated, truncated) arrays."""
        xp, where = self.xp, self.xp.where
        t_next = self.t + 1
        open_price = self.open[t_next]
        is_long = self.units > 0.0
        wants_buy, wants_sell = actions == BUY, actions == SELL
        buy, sell = wants_buy & ~is_long, wants_sell & is_long
        self.invalid = self.invalid + ((wants_buy & is_long) | (wants_sell & ~is_long))

        bought_units, buy_fee, fill_price = buy_fill(self.cash, open_price, self.fee, self.slippage)
        self.slippage_paid = where(buy, self.slippage_paid + bought_units * (fill_price - open_price),
                                   self.slippage_paid)
        self.units = where(buy, bought_units, self.units)
        self.fees_paid = where(buy, self.fees_paid + buy_fee, self.fees_paid)
        self.cash = where(buy, 0.0, self.cash)
        self.entry = where(buy, fill_price, self.entry)

        cash_in, sell_fee = sell_fill(self.units, open_price, self.fee, self.slippage)
        self.slippage_paid = where(sell, self.slippage_paid + self.units * (open_price * self.slippage),
                                   self.slippage_paid)
        self.cash = where(sell, self.cash + cash_in, self.cash)
        self.fees_paid = where(sell, self.fees_paid + sell_fee, self.fees_paid)
        self.units = where(sell, 0.0, self.units)
        self.entry = where(sell, 0.0, self.entry)
        self.trades = self.trades + (buy | sell)

        equity = self.cash + self.units * self.close[t_next]
        step_return = xp.log(equity / self.equity)
        if self.reward_mode == "log_return":
            reward = step_return
        else:
            reward, self.dsr_mean, self.dsr_mean_square = differential_sharpe_step(
                step_return, self.dsr_mean, self.dsr_mean_square
            )
        self.equity = equity
        self.peak = xp.maximum(self.peak, equity)
        self.t = t_next
        terminated = equity <= self.ruin_fraction * self.initial_balance
        truncated = ~terminated & (t_next >= self.length - 1)
        return reward, terminated, truncated

    def info(self) -> dict[str, Any]:
        return {
            "step": self.t, "equity": self.equity, "cash": self.cash, "position": self.units,
            "price": self.close[self.t], "fees_paid": self.fees_paid, "slippage_paid": self.slippage_paid,
            "trades": self.trades, "invalid_actions": self.invalid,
        }


def _check_args(num_envs: int, reward_mode: str) -> None:
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
    if reward_mode not in REWARD_MODES:
        raise ConfigError(f"reward_mode must be one of {', '.join(REWARD_MODES)}; got {reward_mode!r}")


class VectorTradingEnv(gym.vector.VectorEnv):
    """``num_envs`` accounts on one market as numpy arrays; a Gymnasium vector env (same-step autoreset)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        data: MarketSlice | pd.DataFrame | str | Path | None = None,
        num_envs: int = 8,
        initial_balance: float = 10_000.0,
        fee: float = 0.001,
        slippage: float = 0.0005,
        reward_mode: str = "log_return",
        scaler: FeatureScaler | None = None,
        ruin_fraction: float = 0.1,
    ) -> None:
        _check_args(num_envs, reward_mode)
        self.market, self.scaler = resolve_market(data, scaler)
        self.accounts = _Accounts(self.market, num_envs, initial_balance, fee, slippage, reward_mode,
                                  ruin_fraction, np, None)
        self.num_envs = num_envs
        obs_size = self.accounts.obs_size
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self.accounts.reset_rows(np.ones(self.num_envs, dtype=bool))
        return self.accounts.observe(), self.accounts.info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions)
        reward, terminated, truncated = self.accounts.step(actions)
        info = self.accounts.info()
        done = terminated | truncated
        if done.any():
            info["final_obs"] = self.accounts.observe()
            info["_final_obs"] = done
            info["final_equity"] = self.accounts.equity.copy()
            self.accounts.reset_rows(done)
        return self.accounts.observe(), reward.astype(np.float32), terminated, truncated, info


class TorchStep(NamedTuple):
    """One step of ``TorchVectorTradingEnv``; ``final_*`` hold the values before any autoreset."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    done: torch.Tensor
    final_equity: torch.Tensor


class TorchVectorTradingEnv:
    """The same N accounts as torch tensors on ``device`` (CPU, CUDA, MPS): nothing leaves the device.

    ``step`` takes an int64 action tensor and returns a ``TorchStep`` of tensors.
    """

    def __init__(
        self,
        market: MarketSlice,
        num_envs: int,
        initial_balance: float = 10_000.0,
        fee: float = 0.001,
        slippage: float = 0.0005,
        reward_mode: str = "log_return",
        ruin_fraction: float = 0.1,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_args(num_envs, reward_mode)
        self.market = market
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.accounts = _Accounts(market, num_envs, initial_balance, fee, slippage, reward_mode,
                                  ruin_fraction, torch, self.device)

    @property
    def observation_size(self) -> int:
        return self.accounts.obs_size

    def reset(self) -> torch.Tensor:
        self.accounts.reset_rows(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self.accounts.observe()

    def step(self, actions: torch.Tensor) -> TorchStep:
        reward, terminated, truncated = self.accounts.step(actions)
        done = terminated | truncated
        final_obs = self.accounts.observe()
        final_equity = self.accounts.equity.clone()
        # Resetting unconditionally avoids a device-to-host sync to ask whether anyone finished.
        self.accounts.reset_rows(done)
        return TorchStep(self.accounts.observe(), reward.float(), terminated, truncated, final_obs, done,
                         final_equity)

    def info(self) -> dict[str, torch.Tensor]:
        return self.accounts.info()
