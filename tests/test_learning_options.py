"""Learning options of the trading step: random episode windows, position-target actions with fees
computed by hand, and the switching penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_slice, random_walk_slice, synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.market import prepare_market
from nexlify.env.accounts import Accounts, window_starts
from nexlify.env.actions import BUY, FLAT, HOLD, LONG, SELL, n_actions, to_orders
from nexlify.env.rewards import differential_sharpe_step, differential_sortino_step
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import agent_policy, run_policy
from nexlify.training.trainer import Trainer


# --- random episode windows ------------------------------------------------------------------
def test_window_starts_are_deterministic_for_a_seed_and_in_range() -> None:
    accounts, episodes = np.arange(64), np.zeros(64, dtype=np.int64)
    first = window_starts(7, accounts, episodes, 91)
    np.testing.assert_array_equal(first, window_starts(7, accounts, episodes, 91))
    assert first.min() >= 0 and first.max() < 91 and len(set(first.tolist())) > 30  # spread, not lockstep
    assert not np.array_equal(first, window_starts(8, accounts, episodes, 91))
    assert not np.array_equal(first, window_starts(7, accounts, episodes + 1, 91))
    # Torch computes the same rows as numpy (a GPU run draws the windows a CPU run would).
    on_torch = window_starts(7, torch.arange(64), torch.zeros(64, dtype=torch.int64), 91)
    np.testing.assert_array_equal(on_torch.numpy(), first)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_accounts_run_fixed_length_episodes_from_seeded_starts(backend) -> None:
    market = random_walk_slice(100, seed=1)
    accounts = Accounts(market, 6, episode_bars=10, window_seed=3, backend=backend)
    starts = np.asarray(accounts.xp.to_list(accounts.t))
    np.testing.assert_array_equal(starts, window_starts(3, np.arange(6), np.zeros(6, dtype=np.int64), 90))
    hold = accounts.xp.vector(np.full(6, HOLD), "int64")
    for step in range(10):
        truncated = accounts.xp.to_list(accounts.step(hold).truncated)
        assert all(truncated) if step == 9 else not any(truncated)
    # After exactly 10 steps every account starts its second episode at a new seeded row.
    second = np.asarray(accounts.xp.to_list(accounts.t))
    np.testing.assert_array_equal(second, window_starts(3, np.arange(6), np.ones(6, dtype=np.int64), 90))
    again = Accounts(market, 6, episode_bars=10, window_seed=3, backend=backend)
    np.testing.assert_array_equal(np.asarray(again.xp.to_list(again.t)), starts)
    with pytest.raises(ConfigError, match="episode_bars 100 does not fit the 99 steps"):
        Accounts(market, 2, episode_bars=100)


def test_trainer_with_random_windows_is_deterministic_for_a_seed(tmp_path) -> None:
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)
    config = tiny_config(episodes=4, episode_bars=50)

    def weights(folder):
        trainer = Trainer(config, splits, tmp_path / folder)
        state = trainer.train()
        assert state.transitions == 4 * 50 and trainer.episode_steps == 50
        return [p.detach().clone() for p in trainer.agent.q_network.parameters()]

    for a, b in zip(weights("a"), weights("b"), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="episode_bars .* is longer than the training window"):
        Trainer(tiny_config(episode_bars=len(splits.train)), splits, tmp_path / "c")


# --- position-target actions -------------------------------------------------------------------
def test_target_orders() -> None:
    assert n_actions("target") == 2 and n_actions("toggle") == 3
    wanted = np.array([LONG, LONG, FLAT, FLAT])
    is_long = np.array([False, True, True, False])
    np.testing.assert_array_equal(to_orders(wanted, is_long, "target", np.where), [BUY, HOLD, SELL, HOLD])
    assert [to_orders(a, long_, "target") for a, long_ in zip(wanted.tolist(), is_long.tolist(), strict=True)] == \
        [BUY, HOLD, SELL, HOLD]
    np.testing.assert_array_equal(to_orders(wanted, is_long, "toggle", np.where), wanted)


def test_target_actions_trade_with_fees_computed_by_hand() -> None:
    fee, slip = 0.001, 0.0005
    market = make_slice([100.0, 110.0, 120.0, 90.0, 100.0, 105.0])  # closes = opens
    accounts = Accounts(market, 1, fee=fee, slippage=slip)
    accounts.reset()
    equity = []
    for wanted in (LONG, LONG, FLAT, FLAT, LONG):
        orders = to_orders(np.array([wanted]), accounts.units > 0, "target", np.where)
        accounts.advance(orders)  # no reset at the last row: the totals stay readable
        equity.append(float(accounts.equity[0]))
    # Buy at the next open (110) plus slippage with all cash net of the fee; hold; sell at 90 minus
    # slippage, paying the fee; stay flat; buy again at 105.
    units = 10_000 / (1 + fee) / (110 * (1 + slip))
    cash = units * 90 * (1 - slip) * (1 - fee)
    units2 = cash / (1 + fee) / (105 * (1 + slip))
    assert equity == pytest.approx([units * 110, units * 120, cash, cash, units2 * 105], rel=1e-12)
    assert int(accounts.trades[0]) == 3 and int(accounts.invalid[0]) == 0
    fees = 10_000 / (1 + fee) * fee + units * 90 * (1 - slip) * fee + cash / (1 + fee) * fee
    assert float(accounts.fees_paid[0]) == pytest.approx(fees, rel=1e-12)


def test_target_agent_trains_and_backtests_in_orders(tmp_path) -> None:
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)
    trainer = Trainer(tiny_config(episodes=2, action_mode="target"), splits, tmp_path)
    trainer.train()
    agent = AdaptiveDQNAgent.from_checkpoint(tmp_path / "best_model.pth")
    assert agent.action_size == 2 and agent.config.action_mode == "target"
    result = run_policy(splits.test, agent_policy(agent), "agent", 8760.0)
    assert set(np.unique(result.actions)) <= {HOLD, BUY, SELL}
    # Never a buy while long or a sell while flat: every order changes the position.
    position = result.position[0]
    orders = result.actions[0]
    assert np.all(position[1:][orders == BUY] == 1) and np.all(position[:-1][orders == BUY] == 0)
    assert np.all(position[1:][orders == SELL] == 0) and np.all(position[:-1][orders == SELL] == 1)
    # Live decisions are orders too: a long account can only hold or sell, a flat one hold or buy.
    from nexlify.live import LiveTrader

    trader = LiveTrader.from_model(tmp_path / "best_model.pth")
    candles = synthetic_frame(420, seed=1).iloc[-120:]
    assert trader.decide(candles, is_long=True, entry_price=100.0) in ("hold", "sell")
    assert trader.decide(candles, is_long=False) in ("hold", "buy")


# --- switching penalty -------------------------------------------------------------------------
def test_trade_penalty_lowers_the_reward_of_fill_steps_only() -> None:
    market = random_walk_slice(30, seed=4)
    # Account 0 fills at steps 0 and 2; account 1 at steps 0, 1 and 3 (buy while long is no fill).
    orders = np.array([[BUY, BUY], [HOLD, SELL], [SELL, BUY], [HOLD, BUY]])
    fills = np.array([[1, 1], [0, 1], [1, 1], [0, 0]])
    plain, penalised = Accounts(market, 2), Accounts(market, 2, trade_penalty=0.002)
    for step, filled in zip(orders, fills, strict=True):
        a, b = plain.step(step), penalised.step(step)
        np.testing.assert_allclose(a.reward - b.reward, 0.002 * filled, atol=1e-7)
        np.testing.assert_array_equal(a.info["equity"], b.info["equity"])  # equity is never penalised


@pytest.mark.parametrize("backend", ["numpy", "torch", "python"])
def test_differential_sharpe_takes_its_sharpe_of_the_return_less_the_costs(backend: str) -> None:
    # The penalty and the variance charge are costs on the step's return, so the differential Sharpe
    # reward is Moody & Saffell's step applied by hand to log return - penalty x fill - 2 x return^2,
    # and its moving moments follow that costed return too.
    market = random_walk_slice(30, seed=6)
    orders = [BUY, HOLD, HOLD, SELL, HOLD, BUY, SELL, HOLD]
    fills = [1, 0, 0, 1, 0, 1, 1, 0]
    plain = Accounts(market, 1, backend=backend)  # log_return, no costs: the reward is the log return
    sharpe = Accounts(market, 1, backend=backend, reward_mode="differential_sharpe", trade_penalty=0.003,
                      risk_aversion=2.0)
    mean = mean_square = 0.0
    for order, filled in zip(orders, fills, strict=True):
        if backend == "python":
            log_return, reward = plain.advance(order)[0], sharpe.advance(order)[0]
        else:
            actions = np.array([order]) if backend == "numpy" else torch.tensor([order])
            log_return = float(plain.step(actions).reward[0])
            reward = float(sharpe.step(actions).reward[0])
        costed = log_return - 0.003 * filled - 2.0 * log_return**2
        expected, mean, mean_square = differential_sharpe_step(costed, mean, mean_square)
        assert reward == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_dsr_eta_sets_the_rate_of_the_differential_sharpe_moments() -> None:
    # The same orders with eta 0.05: the rewards follow Moody & Saffell's step at 0.05 by hand, and
    # differ from the default rate's, so the key cannot be ignored unnoticed.
    market = random_walk_slice(30, seed=9)
    orders = [BUY, HOLD, HOLD, HOLD, SELL, BUY, HOLD, HOLD]
    plain = Accounts(market, 1)
    fast = Accounts(market, 1, reward_mode="differential_sharpe", dsr_eta=0.05)
    default = Accounts(market, 1, reward_mode="differential_sharpe")
    mean = mean_square = 0.0
    differences = []
    for order in orders:
        actions = np.array([order])
        log_return = float(plain.step(actions).reward[0])
        reward, other = float(fast.step(actions).reward[0]), float(default.step(actions).reward[0])
        expected, mean, mean_square = differential_sharpe_step(log_return, mean, mean_square, eta=0.05)
        assert reward == pytest.approx(expected, rel=1e-4, abs=1e-6)
        differences.append(abs(reward - other))
    assert max(differences) > 0.1
    with pytest.raises(ConfigError, match="dsr_eta"):
        Accounts(market, 1, reward_mode="differential_sharpe", dsr_eta=0.0)


# --- the differential Sortino reward --------------------------------------------------------------
def test_differential_sortino_step_by_hand() -> None:
    # Moving mean A = 0.002, moving mean square of the losses D2 = 1e-4 (downside deviation 0.01).
    # A gain of 0.03: (R - A/2) / sqrt(D2) = (0.03 - 0.001) / 0.01 = 2.9; D2 decays to 0.99e-4.
    reward, mean, downside = differential_sortino_step(0.03, 0.002, 1e-4, np.where)
    assert float(reward) == pytest.approx(2.9, rel=1e-3)
    assert float(mean) == pytest.approx(0.00228) and float(downside) == pytest.approx(0.99e-4)
    # A loss of 0.02: (D2 (R - A/2) - A/2 R^2) / D2^1.5 = (1e-4 x -0.021 - 0.001 x 4e-4) / 1e-6 = -2.5;
    # D2 moves toward R^2: 1e-4 + 0.01 x (4e-4 - 1e-4) = 1.03e-4.
    reward, mean, downside = differential_sortino_step(-0.02, 0.002, 1e-4, np.where)
    assert float(reward) == pytest.approx(-2.5, rel=1e-3)
    assert float(mean) == pytest.approx(0.00178) and float(downside) == pytest.approx(1.03e-4)
    # No loss seen yet (D2 = 0): the ratio is undefined, the reward 0, and only a loss starts D2.
    reward, _, downside = differential_sortino_step(0.01, 0.0, 0.0, np.where)
    assert float(reward) == 0.0 and float(downside) == 0.0
    _, _, downside = differential_sortino_step(-0.01, 0.0, 0.0, np.where)
    assert float(downside) == pytest.approx(0.01 * 1e-4)


@pytest.mark.parametrize("step_return", [0.03, 0.004, 0.0, -0.001, -0.02])
def test_differential_sortino_step_is_the_ratios_first_order_change(step_return: float) -> None:
    # Its definition: the step is d/d(eta) of A_eta / sqrt(D2_eta) at eta = 0, where the moments move
    # by eta toward the new return and its squared loss. A finite difference gives the same number.
    mean, downside = 0.002, 1e-4

    def ratio(eta: float) -> float:
        loss = min(step_return, 0.0)
        return (mean + eta * (step_return - mean)) / np.sqrt(downside + eta * (loss * loss - downside))

    eta = 1e-7
    expected = (ratio(eta) - ratio(0.0)) / eta
    reward = differential_sortino_step(step_return, mean, downside, np.where)[0]
    assert float(reward) == pytest.approx(expected, rel=1e-3)


def test_differential_sortino_never_charges_a_gain_as_risk() -> None:
    # The point of the downside ratio: with the same moments, a larger gain always earns more, and a
    # gain's reward is the same whatever the gains before it. The differential Sharpe instead charges
    # a large gain for the variance it adds, so past some size a larger gain earns less.
    gains = np.linspace(0.001, 0.2, 200)
    sortino = differential_sortino_step(gains, 0.002, 1e-4, np.where)[0]
    sharpe = differential_sharpe_step(gains, 0.002, 2e-4)[0]
    assert np.all(np.diff(sortino) > 0)
    assert np.any(np.diff(sharpe) < 0)


@pytest.mark.parametrize("backend", ["numpy", "torch", "python"])
def test_differential_sortino_takes_its_ratio_of_the_return_less_the_costs(backend: str) -> None:
    # As for the differential Sharpe: the switching penalty is a cost on the step's return, and the
    # reward is the downside ratio's step applied by hand to log return - penalty x fill.
    market = random_walk_slice(40, seed=11)
    orders = [BUY, HOLD, HOLD, HOLD, SELL, HOLD, BUY, HOLD, HOLD, SELL, HOLD]
    fills = [1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0]
    plain = Accounts(market, 1, backend=backend)
    sortino = Accounts(market, 1, backend=backend, reward_mode="differential_sortino", trade_penalty=0.003)
    sharpe = Accounts(market, 1, backend=backend, reward_mode="differential_sharpe", trade_penalty=0.003)
    mean = downside = 0.0
    differences = []
    for order, filled in zip(orders, fills, strict=True):
        if backend == "python":
            log_return, reward, other = (a.advance(order)[0] for a in (plain, sortino, sharpe))
        else:
            actions = np.array([order]) if backend == "numpy" else torch.tensor([order])
            log_return, reward, other = (float(a.step(actions).reward[0]) for a in (plain, sortino, sharpe))
        costed = log_return - 0.003 * filled
        expected, mean, downside = differential_sortino_step(costed, mean, downside, np.where)
        assert reward == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
        differences.append(abs(reward - other))
    assert downside > 0.0 and max(differences) > 0.1  # a loss was seen, and it is not the Sharpe reward


# --- risk aversion -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_risk_aversion_charges_the_squared_log_return_of_every_step(backend: str) -> None:
    market = random_walk_slice(40, seed=8)
    orders = [[BUY, HOLD], [HOLD, BUY], [HOLD, HOLD], [SELL, HOLD], [HOLD, SELL], [HOLD, HOLD]]
    plain = Accounts(market, 2, trade_penalty=0.001, backend=backend)
    averse = Accounts(market, 2, trade_penalty=0.001, risk_aversion=3.0, backend=backend)
    equity = np.full(2, 10_000.0)
    for step in orders:
        actions = np.array(step) if backend == "numpy" else torch.as_tensor(step)
        a, b = plain.step(actions), averse.step(actions)
        after = np.asarray(a.info["equity"], dtype=np.float64)
        log_return = np.log(after / equity)
        to_numpy = (lambda x: x.cpu().numpy()) if backend == "torch" else np.asarray
        np.testing.assert_allclose(to_numpy(a.reward) - to_numpy(b.reward), 3.0 * log_return**2, rtol=1e-4,
                                   atol=1e-9)  # rewards are float32
        np.testing.assert_array_equal(after, np.asarray(b.info["equity"], dtype=np.float64))
        equity = after
    # A flat account that does not trade pays nothing: its log return is 0.
    assert log_return[1] == 0.0


def test_risk_aversion_key_is_validated() -> None:
    assert TrainingConfig(risk_aversion=2.5).risk_aversion == 2.5
    with pytest.raises(ConfigError, match="risk_aversion"):
        TrainingConfig(risk_aversion=-1.0)
