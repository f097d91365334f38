"""``VectorTradingEnv``: N accounts on one market as a Gymnasium ``VectorEnv`` (numpy arrays).

A thin adapter of ``nexlify.env.accounts.Accounts`` to Gymnasium's vector API, for libraries that
expect it. Nexlify's own trainer and backtests use ``Accounts`` directly (numpy or torch), whose
``step`` returns one ``AccountStep`` record on every backend.

Autoreset is "same step": when an account's episode ends, the observation returned for it is the
first observation of its next episode, and the real last observation is in ``info['final_obs']``
(rows where ``info['_final_obs']`` is True).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from nexlify.data.features import FeatureScaler
from nexlify.data.market import MarketSlice
from nexlify.env.accounts import Accounts
from nexlify.env.actions import N_ACTIONS
from nexlify.env.trading import resolve_market


class VectorTradingEnv(gym.vector.VectorEnv):
    """``num_envs`` accounts on one market as numpy arrays; a Gymnasium vector env (same-step autoreset).

    ``data``, ``scaler`` and ``account_options`` are those of ``TradingEnvironment``.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        data: MarketSlice | pd.DataFrame | str | Path | None = None,
        num_envs: int = 8,
        *,
        scaler: FeatureScaler | None = None,
        **account_options: Any,
    ) -> None:
        self.market, self.scaler = resolve_market(data, scaler)
        self.accounts = Accounts(self.market, num_envs, backend="numpy", **account_options)
        self.num_envs = num_envs
        obs_size = self.accounts.observation_size
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        return self.accounts.reset(), self.accounts.info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        result = self.accounts.step(np.asarray(actions))
        info = dict(result.info)
        done = result.done
        if done.any():
            info["final_obs"] = result.final_obs
            info["_final_obs"] = done
            info["final_equity"] = result.info["equity"]
        return result.obs, result.reward, result.terminated, result.truncated, info
