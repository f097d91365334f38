"""Vectorised environments give exactly the trajectories of N single environments."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import random_walk_slice
from nexlify.env.trading import TradingEnvironment
from nexlify.env.vector import TorchVectorTradingEnv, VectorTradingEnv


def _single_trajectories(market, actions, **kwargs):
    """Run each column of ``actions`` through its own single env (resetting at episode ends)."""
    n_steps, n_envs = actions.shape
    obs = np.zeros((n_steps, n_envs, 12), np.float32)
    rewards = np.zeros((n_steps, n_envs))
    equity = np.zeros((n_steps, n_envs))
    for i in range(n_envs):
        env = TradingEnvironment(market, **kwargs)
        env.reset()
        for t in range(n_steps):
            o, r, term, trunc, info = env.step(int(actions[t, i]))
            equity[t, i] = info["equity"]
            if term or trunc:
                o, _ = env.reset()
            obs[t, i], rewards[t, i] = o, r
    return obs, rewards, equity


@pytest.mark.parametrize("reward_mode", ["log_return", "differential_sharpe"])
def test_numpy_vector_env_matches_single_envs_exactly(reward_mode):
    market = random_walk_slice(60, seed=2)
    actions = np.random.default_rng(0).integers(0, 3, size=(150, 5))  # crosses two episode ends
    kwargs = {"fee": 0.001, "slippage": 0.0005, "reward_mode": reward_mode}
    expected_obs, expected_rewards, expected_equity = _single_trajectories(market, actions, **kwargs)
    venv = VectorTradingEnv(market, num_envs=5, **kwargs)
    venv.reset()
    for t in range(150):
        obs, reward, _, _, info = venv.step(actions[t])
        np.testing.assert_array_equal(obs, expected_obs[t])
        np.testing.assert_array_equal(reward, expected_rewards[t].astype(np.float32))
        np.testing.assert_array_equal(info["equity"], expected_equity[t])


def test_torch_vector_env_on_cpu_matches_numpy():
    market = random_walk_slice(80, seed=4)
    actions = np.random.default_rng(1).integers(0, 3, size=(200, 7))
    venv = VectorTradingEnv(market, num_envs=7)
    tenv = TorchVectorTradingEnv(market, num_envs=7, device="cpu")
    np.testing.assert_array_equal(venv.reset()[0], tenv.reset().numpy())
    for t in range(200):
        obs, reward, terminated, truncated, info = venv.step(actions[t])
        tobs, treward, tterm, ttrunc, tfinal, tdone, tequity = tenv.step(torch.as_tensor(actions[t]))
        np.testing.assert_array_equal(info["equity"], tequity.numpy())
        np.testing.assert_array_equal(obs, tobs.numpy())
        np.testing.assert_allclose(reward, treward.numpy(), rtol=0, atol=1e-7)
        np.testing.assert_array_equal(truncated, ttrunc.numpy())
        running = ~(terminated | truncated)  # the torch env has already reset finished accounts
        np.testing.assert_array_equal(info["cash"][running], tenv.info()["cash"].numpy()[running])
        if truncated.any():
            np.testing.assert_array_equal(info["final_obs"][truncated], tfinal.numpy()[truncated])


def test_same_step_autoreset_reports_final_observation():
    market = random_walk_slice(10)
    venv = VectorTradingEnv(market, num_envs=3)
    venv.reset()
    for _ in range(8):
        _, _, _, truncated, info = venv.step(np.zeros(3, dtype=np.int64))
        assert not truncated.any()
    obs, _, _, truncated, info = venv.step(np.ones(3, dtype=np.int64))
    assert truncated.all() and info["_final_obs"].all()
    np.testing.assert_array_equal(info["final_obs"][:, :9], np.repeat(market.features[9:10], 3, axis=0))
    np.testing.assert_array_equal(obs[:, :9], np.repeat(market.features[0:1], 3, axis=0))  # fresh episode


def test_is_a_gymnasium_vector_env():
    venv = VectorTradingEnv(random_walk_slice(30), num_envs=4)
    assert isinstance(venv, gym.vector.VectorEnv)
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    assert venv.action_space.shape == (4,)
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    wrapped.reset()
    wrapped.step(venv.action_space.sample())
