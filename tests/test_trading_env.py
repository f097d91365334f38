"""The single Gymnasium trading environment: timing, rewards, episode ends, API compliance."""

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from helpers import make_slice, random_walk_slice
from nexlify.env.actions import BUY, HOLD, SELL
from nexlify.env.trading import TradingEnvironment
from nexlify.errors import ConfigError


def test_passes_gymnasium_env_checker():
    check_env(TradingEnvironment(random_walk_slice(200)), skip_render_check=True)


def test_registered_id_builds_the_env():
    import nexlify.env  # noqa: F401  (registers the id)

    env = gym.make("Nexlify/Trading-v0", data=random_walk_slice(50))
    obs, _ = env.reset(seed=1)
    assert obs.shape == (12,)
    # The module-qualified id imports the package itself, so it works in a fresh process too.
    env = gym.make("nexlify.env:Nexlify/Trading-v0", data=random_walk_slice(50))
    assert env.unwrapped.state_size == 12


def test_decision_fills_at_next_open_and_marks_at_next_close():
    # Opens differ from closes so that using the wrong price would show.
    market = make_slice([100.0, 110.0, 120.0, 130.0], close_prices=[105.0, 115.0, 125.0, 135.0])
    env = TradingEnvironment(market, initial_balance=1_000.0, fee=0.0, slippage=0.0)
    env.reset()
    _, reward, *_ , info = env.step(BUY)  # decided on candle 0, filled at open of candle 1 (110)
    units = 1_000.0 / 110.0
    assert info["position"] == pytest.approx(units)
    assert info["equity"] == pytest.approx(units * 115.0)
    assert reward == pytest.approx(math.log(115.0 / 110.0))
    _, _, *_, info = env.step(SELL)  # filled at open of candle 2 (120)
    assert info["cash"] == pytest.approx(units * 120.0)


def test_rewards_add_up_to_log_growth_and_episode_truncates():
    env = TradingEnvironment(random_walk_slice(400, seed=3))
    env.reset()
    rng = np.random.default_rng(0)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
        total += reward
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert steps == 399  # 400 rows give 399 decisions
    assert total == pytest.approx(math.log(info["equity"] / 10_000.0), abs=1e-9)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(HOLD)


def test_losing_the_account_terminates():
    # Trading back and forth in a flat market at 5% costs per side burns the account.
    env = TradingEnvironment(make_slice([100.0] * 200), fee=0.05, slippage=0.05, ruin_fraction=0.5)
    env.reset()
    for step in range(199):
        _, _, terminated, truncated, info = env.step(BUY if step % 2 == 0 else SELL)
        if terminated:
            break
    assert terminated and not truncated
    assert info["equity"] <= 5_000.0


def test_invalid_actions_counted_and_info_complete():
    env = TradingEnvironment(random_walk_slice(20))
    env.reset()
    env.step(SELL)  # flat: no-op
    env.step(BUY)
    _, _, _, _, info = env.step(BUY)  # already long: no-op
    assert info["invalid_actions"] == 2
    assert info["trades"] == 1
    assert {"equity", "cash", "position", "price", "fees_paid", "trades"} <= set(info)
    assert info["equity"] == pytest.approx(info["cash"] + info["position"] * info["price"])


def test_observation_holds_account_features():
    market = make_slice([100.0, 100.0, 100.0, 120.0, 90.0], close_prices=[100.0, 100.0, 110.0, 120.0, 90.0])
    env = TradingEnvironment(market, fee=0.0, slippage=0.0)
    env.reset()
    obs, *_ = env.step(BUY)  # filled at 100, marked at close 100
    assert obs[9] == 1.0 and obs[10] == pytest.approx(0.0)
    obs, *_ = env.step(HOLD)  # close 110
    assert obs[10] == pytest.approx(0.10)
    env.step(HOLD)  # close 120: new peak
    obs, *_ = env.step(HOLD)  # close 90
    assert obs[11] == pytest.approx(90.0 / 120.0 - 1.0)
    np.testing.assert_array_equal(obs[:9], market.features[4])


def test_differential_sharpe_mode_runs_and_differs():
    market = random_walk_slice(100, seed=5)
    actions = np.random.default_rng(1).integers(0, 3, 99)
    rewards = {}
    for mode in ("log_return", "differential_sharpe"):
        env = TradingEnvironment(market, reward_mode=mode)
        env.reset()
        rewards[mode] = [env.step(int(a))[1] for a in actions]
    assert np.all(np.isfinite(rewards["differential_sharpe"]))
    assert not np.allclose(rewards["log_return"], rewards["differential_sharpe"])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="reward_mode"):
        TradingEnvironment(random_walk_slice(20), reward_mode="profit")
    with pytest.raises(ConfigError, match="initial_balance"):
        TradingEnvironment(random_walk_slice(20), initial_balance=0)


def test_loads_a_dataframe_and_the_bundled_data(tmp_path):
    from nexlify.data.market import load_ohlcv

    frame = load_ohlcv(None).iloc[-500:]
    env = TradingEnvironment(frame)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and np.isfinite(obs).all()
    assert len(env.market) < 500  # warm-up rows dropped
    path = tmp_path / "candles.csv"
    frame.reset_index().to_csv(path, index=False)
    env_from_file = TradingEnvironment(str(path))
    np.testing.assert_array_equal(env_from_file.market.close, env.market.close)


def test_stable_baselines3_can_train_on_it():
    sb3 = pytest.importorskip("stable_baselines3")
    env = TradingEnvironment(random_walk_slice(300))
    model = sb3.DQN("MlpPolicy", env, learning_starts=50, buffer_size=1_000, seed=0, verbose=0)
    model.learn(total_timesteps=300)
    action, _ = model.predict(env.reset()[0], deterministic=True)
    assert int(action) in (0, 1, 2)


def test_a_frame_is_not_looked_ahead():
    # Only candles far in the future change (prices tripled in the last 100 rows): everything the
    # environment shows before them must be the same, so the scaler cannot have seen them.
    from helpers import synthetic_frame

    frame = synthetic_frame(600, seed=4)
    future = frame.copy()
    future.iloc[-100:, :4] *= 3.0
    envs = [TradingEnvironment(f) for f in (frame, future)]
    observations = [[env.reset()[0]] for env in envs]
    actions = np.random.default_rng(0).integers(0, 3, 200)
    for env, seen in zip(envs, observations, strict=True):
        seen.extend(env.step(int(a))[0] for a in actions)
    np.testing.assert_array_equal(np.array(observations[0]), np.array(observations[1]))
    # The scaler's rows are left out of the episode: it starts after them.
    assert envs[0].market.timestamps[0] > frame.index[48 + 32].tz_localize(None).to_datetime64()


def test_a_frame_with_a_given_scaler_keeps_every_usable_row():
    from helpers import synthetic_frame
    from nexlify.data.market import prepare_market

    frame = synthetic_frame(400, seed=2)
    scaler = prepare_market(frame, data_days=None).scaler
    env = TradingEnvironment(frame, scaler=scaler)
    assert len(env.market) == 400 - 48 and env.scaler is scaler
