"""N accounts stepped together give exactly the trajectories of N single environments, on every backend."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import make_slice, random_walk_slice
from nexlify.env.accounts import Accounts, AccountStep
from nexlify.env.actions import N_ACTIONS
from nexlify.env.trading import TradingEnvironment
from nexlify.env.vector import VectorTradingEnv
from nexlify.errors import ConfigError


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


@pytest.mark.parametrize("reward_mode", ["log_return", "differential_sharpe", "differential_sortino"])
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


def test_torch_and_numpy_accounts_give_the_same_step_record():
    market = random_walk_slice(80, seed=4)
    actions = np.random.default_rng(1).integers(0, 3, size=(200, 7))
    numpy_accounts = Accounts(market, 7)
    torch_accounts = Accounts(market, 7, backend="torch", device="cpu")
    np.testing.assert_array_equal(numpy_accounts.reset(), torch_accounts.reset().numpy())
    finished = 0
    for t in range(200):
        a = numpy_accounts.step(actions[t])
        b = torch_accounts.step(torch.as_tensor(actions[t]))
        assert type(a) is type(b) is AccountStep
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            assert getattr(a, field).dtype == getattr(b, field).numpy().dtype, field
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field).numpy(), err_msg=field)
        for key, value in a.info.items():
            np.testing.assert_array_equal(value, b.info[key].numpy(), err_msg=key)
        np.testing.assert_array_equal(a.done, b.done.numpy())
        finished += int(a.done.sum())
    assert finished >= 14  # two episode ends per account were crossed


def test_step_record_separates_the_final_observation_from_the_next_episode():
    market = random_walk_slice(10)
    accounts = Accounts(market, 3)
    accounts.reset()
    for _ in range(8):
        result = accounts.step(np.zeros(3, dtype=np.int64))
        assert not result.done.any()
        np.testing.assert_array_equal(result.obs, result.final_obs)
    result = accounts.step(np.ones(3, dtype=np.int64))
    assert result.truncated.all() and not result.terminated.any()
    np.testing.assert_array_equal(result.final_obs[:, :9], np.repeat(market.features[9:10], 3, axis=0))
    np.testing.assert_array_equal(result.obs[:, :9], np.repeat(market.features[0:1], 3, axis=0))  # fresh episode
    assert (result.info["step"] == 9).all() and (result.info["trades"] == 1).all()  # before the reset
    assert (accounts.info()["step"] == 0).all() and (accounts.info()["trades"] == 0).all()  # after it


def test_gymnasium_adapter_reports_the_final_observation():
    market = random_walk_slice(10)
    venv = VectorTradingEnv(market, num_envs=3)
    venv.reset()
    for _ in range(8):
        venv.step(np.zeros(3, dtype=np.int64))
    obs, _, _, truncated, info = venv.step(np.ones(3, dtype=np.int64))
    assert truncated.all() and info["_final_obs"].all()
    np.testing.assert_array_equal(info["final_obs"][:, :9], np.repeat(market.features[9:10], 3, axis=0))
    np.testing.assert_array_equal(obs[:, :9], np.repeat(market.features[0:1], 3, axis=0))


def test_state_dict_round_trip_continues_exactly():
    market = random_walk_slice(50, seed=6)
    actions = np.random.default_rng(2).integers(0, 3, size=(70, 4))
    accounts = Accounts(market, 4, reward_mode="differential_sharpe")
    accounts.reset()
    for t in range(30):
        accounts.step(actions[t])
    copy = Accounts(market, 4, reward_mode="differential_sharpe", backend="torch")
    copy.load_state_dict(accounts.state_dict())
    np.testing.assert_array_equal(copy.observe().numpy(), accounts.observe())
    for t in range(30, 70):
        a, b = accounts.step(actions[t]), copy.step(torch.as_tensor(actions[t]))
        np.testing.assert_array_equal(a.reward, b.reward.numpy())
        np.testing.assert_array_equal(a.info["equity"], b.info["equity"].numpy())


def test_bad_settings_are_refused():
    market = random_walk_slice(20)
    for kwargs, match in (({"num_envs": 0}, "num_envs"), ({"num_envs": True}, "num_envs"),
                          ({"reward_mode": "profit"}, "reward_mode"), ({"initial_balance": 0}, "initial_balance"),
                          ({"backend": "jax"}, "backend"), ({"num_envs": 2, "backend": "python"}, "one account")):
        with pytest.raises(ConfigError, match=match):
            Accounts(market, **kwargs)


def test_is_a_gymnasium_vector_env():
    venv = VectorTradingEnv(random_walk_slice(30), num_envs=4)
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.single_action_space.n == N_ACTIONS
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    assert venv.action_space.shape == (4,)
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    wrapped.reset()
    wrapped.step(venv.action_space.sample())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_an_account_ruined_midway_gets_a_fresh_balance_where_it_stands(backend):
    # Prices halve every hour: an account that buys at the first open is below 10% of its balance
    # (ruin) after the fill at row 1's open and the marks at rows 1-4; with 20 rows it is ruined far
    # before the window's end. It restarts with 10,000 in cash at the row it reached, not at row 0.
    prices = [1000.0 * 0.5**t for t in range(20)]
    accounts = Accounts(make_slice(prices), 2, backend=backend, device="cpu")
    accounts.reset()
    xp = (lambda a: torch.as_tensor(a)) if backend == "torch" else np.asarray
    ruined_at = None
    for t in range(1, 19):
        result = accounts.step(xp(np.array([1, 0], dtype=np.int64)))  # account 0 buys, 1 holds cash
        terminated = np.asarray(result.terminated)
        if terminated[0] and ruined_at is None:
            ruined_at = t
            assert not terminated[1] and float(result.info["equity"][0]) <= 1_000.0
            after = {k: np.asarray(v) for k, v in accounts.info().items()}
            assert after["step"][0] == t  # the same row: the window goes on
            assert after["cash"][0] == 10_000.0 and after["position"][0] == 0.0 and after["equity"][0] == 10_000.0
            assert after["trades"][0] == 0
    assert ruined_at is not None and ruined_at < 10
    result = accounts.step(xp(np.array([0, 0], dtype=np.int64)))  # row 19: the window's end
    assert np.asarray(result.truncated).all()
    assert (np.asarray(accounts.info()["step"]) == 0).all()  # a new episode starts at row 0


def test_a_one_account_backtest_traces_each_of_several_accounts_exactly():
    """run_policy steps one account on the python backend and several on numpy: the same orders
    (half orders too) give the same equity, levels and metrics, and a ruined account stops trading."""
    from nexlify.evaluation.backtest import run_policy

    rises = [100.0 * 1.01 ** i for i in range(40)]
    market = make_slice(rises + [rises[-1] * 0.5 ** (i + 1) for i in range(8)] + [1.0] * 12, seed=3)
    orders = np.random.default_rng(7).integers(0, N_ACTIONS + 2, size=len(market))  # 0-4: half orders too
    orders[38:] = 1  # long into the collapse: the account is ruined and must stop

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        return np.full(len(obs), orders[t])

    one = run_policy(market, policy, "one", 8760.0)
    three = run_policy(market, policy, "three", 8760.0, num_accounts=3)
    for account in range(3):
        assert np.array_equal(one.equity[0], three.equity[account])
        assert np.array_equal(one.position[0], three.position[account])
        assert np.array_equal(one.actions[0], three.actions[account])
    assert one.metrics == pytest.approx(three.metrics, rel=1e-12)  # a mean over 3 equal accounts
    one_numpy = run_policy(market, policy, "one", 8760.0, backend="numpy")  # one account, asked for numpy
    assert np.array_equal(one.equity, one_numpy.equity) and one.metrics == one_numpy.metrics
    assert set(np.unique(one.position)) >= {0.5}  # a half position was held
    ruined = int(np.argmax(one.equity[0] < 1_000.0))  # below the 10% ruin line
    assert 0 < ruined < len(market) - 2 and (one.equity[0, ruined:] == one.equity[0, ruined]).all()
    assert (one.actions[0, ruined:] == 0).all()  # holds (no orders) after ruin
