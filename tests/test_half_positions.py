"""Half positions (action mode ``target_half``): the half orders of the trading step with fees computed
by hand, the same numbers on every backend, in ``Portfolio`` and in paper trading, the all-in orders
unchanged, a half agent that trains deterministically and backtests in levels, and half models that
trade: paper sessions equal to their backtest bit for bit, live orders sized by hand against the fake
exchange, partial fills and restarts."""

from __future__ import annotations

import sqlite3

import ccxt
import numpy as np
import pytest
import torch

from fake_exchange import FakeMarket
from helpers import make_slice, random_walk_slice, synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.cli import main
from nexlify.data.features import WARMUP_BARS, FeatureScaler
from nexlify.data.market import detect_timeframe, load_ohlcv, market_slice_from_frame, periods_per_year, prepare_market
from nexlify.env.accounts import Accounts
from nexlify.env.actions import BUY, BUY_HALF, HOLD, ORDER_NAMES, SELL, SELL_HALF, n_actions, to_orders
from nexlify.env.portfolio import Portfolio
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import agent_policy, run_policy
from nexlify.evaluation.ensemble import consensus_orders
from nexlify.evaluation.metrics import compute_metrics
from nexlify.live import LiveTrader
from nexlify.trading.account import Account, level_after, position_text, target_level
from nexlify.trading.broker import LiveBroker, PaperBroker, buy_budget
from nexlify.trading.feeds import ReplayClock
from nexlify.trading.journal import Journal, account_from_mark
from nexlify.trading.report import report_text, session_report
from nexlify.trading.runner import TradeOptions, run_trade
from nexlify.training.pipeline import backtest_with_baselines
from nexlify.training.trainer import Trainer
from trading_support import (
    KEY,
    MAX_POSITION,
    SECRET,
    LiveRun,
    assert_balances_match,
    half_rule_model,
    market_frame,
    rows_of,
    rule_model,
    ts_of,
    write_feed,
)

FEE, SLIP = 0.001, 0.0005
FLAT_, HALF_, LONG_ = 0, 1, 2  # target_half actions
HOUR_MS = 3_600_000


def test_target_half_orders_move_the_level_by_the_difference() -> None:
    assert n_actions("target_half") == 3
    wanted = np.array([HALF_, LONG_, FLAT_, HALF_, LONG_, FLAT_, HALF_, LONG_, FLAT_])
    level = np.array([0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
    expected = [BUY_HALF, BUY, HOLD, HOLD, BUY_HALF, SELL_HALF, SELL_HALF, HOLD, SELL]
    np.testing.assert_array_equal(to_orders(wanted, level, "target_half", np.where), expected)
    assert [to_orders(a, p, "target_half") for a, p in zip(wanted.tolist(), level.tolist(), strict=True)] == expected
    on_torch = to_orders(torch.tensor(wanted), torch.tensor(level), "target_half", torch.where)
    np.testing.assert_array_equal(on_torch.numpy(), expected)
    # The all-in modes read any level above 0 as long.
    assert to_orders(0, 0.5, "target") == SELL and to_orders(1, 0.0, "target") == BUY


def _run(backend: str, orders: list[int]) -> tuple[Accounts, list[float], list[float]]:
    market = make_slice([100.0, 110.0, 120.0, 90.0, 100.0, 105.0, 95.0])  # closes = opens
    accounts = Accounts(market, 1, fee=FEE, slippage=SLIP, backend=backend, half_orders=True)
    accounts.reset()
    equity, levels = [], []
    for order in orders:
        action = order if backend == "python" else accounts.xp.vector([order], "int64")
        accounts.advance(action)
        equity.append(float(np.asarray(accounts.xp.to_list(accounts.equity)).reshape(-1)[0]))
        levels.append(float(np.asarray(accounts.xp.to_list(accounts.level)).reshape(-1)[0]))
    return accounts, equity, levels


@pytest.mark.parametrize("backend", ["numpy", "torch", "python"])
def test_half_orders_trade_with_fees_computed_by_hand(backend: str) -> None:
    orders = [BUY_HALF, BUY_HALF, SELL_HALF, SELL_HALF, BUY, SELL_HALF]
    accounts, equity, levels = _run(backend, orders)
    # Half of the cash at 110; the other half at 120 (the average fill price is the units' mean);
    # half the units at 90; the rest at 100; all cash at 105; half the units at 95.
    fill1, fill2 = 110 * (1 + SLIP), 120 * (1 + SLIP)
    u1 = 5_000 / (1 + FEE) / fill1
    u2 = 5_000 / (1 + FEE) / fill2
    held = u1 + u2
    cash3 = held / 2 * 90 * (1 - SLIP) * (1 - FEE)
    cash4 = cash3 + held / 2 * 100 * (1 - SLIP) * (1 - FEE)
    u5 = cash4 / (1 + FEE) / (105 * (1 + SLIP))
    cash6 = u5 / 2 * 95 * (1 - SLIP) * (1 - FEE)
    assert equity == pytest.approx([5_000 + u1 * 110, held * 120, cash3 + held / 2 * 90, cash4, u5 * 105,
                                    cash6 + u5 / 2 * 95], rel=1e-12)
    assert levels == [0.5, 1.0, 0.5, 0.0, 1.0, 0.5]
    fees = (5_000 / (1 + FEE) * FEE * 2 + held / 2 * (90 + 100) * (1 - SLIP) * FEE + cash4 / (1 + FEE) * FEE
            + u5 / 2 * 95 * (1 - SLIP) * FEE)
    def to_float(value) -> float:
        return float(np.asarray(accounts.xp.to_list(value)).reshape(-1)[0])

    assert to_float(accounts.fees_paid) == pytest.approx(fees, rel=1e-12)
    assert to_float(accounts.trades) == 6 and to_float(accounts.invalid) == 0
    # The last buy came from flat, so the entry is its own fill price; a sale leaves it as it was.
    assert to_float(accounts.entry) == pytest.approx(105 * (1 + SLIP), rel=1e-15)
    # The observation shows the level and the open position's return since its average fill price.
    obs = np.asarray(accounts.xp.to_list(accounts.observe())).reshape(-1)
    assert obs[-3] == 0.5 and obs[-2] == pytest.approx(95 / (105 * (1 + SLIP)) - 1, rel=1e-6)


def test_the_average_fill_price_of_a_position_built_in_two_halves() -> None:
    accounts, _, _ = _run("numpy", [BUY_HALF, BUY_HALF])
    fill1, fill2 = 110 * (1 + SLIP), 120 * (1 + SLIP)
    u1, u2 = 5_000 / (1 + FEE) / fill1, 5_000 / (1 + FEE) / fill2
    assert float(accounts.entry[0]) == pytest.approx((u1 * fill1 + u2 * fill2) / (u1 + u2), rel=1e-14)
    assert float(accounts.cash[0]) == 0.0  # the second half spends what is left, exactly


def test_half_orders_that_cannot_move_are_counted_and_change_nothing() -> None:
    accounts, equity, levels = _run("numpy", [SELL_HALF, SELL, BUY, BUY_HALF, BUY])
    assert levels == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert int(accounts.trades[0]) == 1 and int(accounts.invalid[0]) == 4
    # Accounts built without half orders refuse them the same way instead of trading them.
    plain = Accounts(make_slice([100.0, 110.0, 120.0]), 1, fee=FEE, slippage=SLIP)
    plain.advance(np.array([BUY_HALF]))
    assert int(plain.invalid[0]) == 1 and int(plain.trades[0]) == 0 and float(plain.cash[0]) == 10_000


def test_portfolio_shares_follow_the_accounts() -> None:
    accounts, equity, _ = _run("numpy", [BUY_HALF, BUY_HALF, SELL_HALF, SELL_HALF, BUY, SELL_HALF])
    portfolio = Portfolio(10_000, FEE, SLIP)
    opens = [110.0, 120.0, 90.0, 100.0, 105.0, 95.0]
    steps = [("buy", 0.5), ("buy", 1.0), ("sell", 0.5), ("sell", 1.0), ("buy", 1.0), ("sell", 0.5)]
    for (side, share), price, expected in zip(steps, opens, equity, strict=True):
        assert getattr(portfolio, side)(price, share)
        assert portfolio.equity(price) == pytest.approx(expected, rel=1e-12)
    assert portfolio.trades == 6 and portfolio.fees_paid == pytest.approx(float(accounts.fees_paid[0]), rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_all_in_orders_are_bit_identical_with_half_orders_on(backend: str) -> None:
    market = random_walk_slice(300, seed=4)
    rng = np.random.default_rng(4)
    orders = rng.integers(0, 3, size=(299, 8))
    runs = []
    for half in (False, True):
        accounts = Accounts(market, 8, backend=backend, half_orders=half, trade_penalty=0.004,
                            reward_mode="differential_sharpe")
        rewards = []
        for row in orders:
            rewards.append(accounts.xp.to_list(accounts.step(accounts.xp.vector(row, "int64")).reward))
        runs.append((rewards, accounts.state_dict()))
    assert runs[0] == runs[1]


def test_accounts_state_saved_before_levels_existed_loads_with_its_positions() -> None:
    accounts = Accounts(make_slice([100.0, 110.0, 120.0, 130.0]), 2, half_orders=True)
    accounts.advance(np.array([BUY, HOLD]))
    state = accounts.state_dict()
    del state["level"]
    again = Accounts(make_slice([100.0, 110.0, 120.0, 130.0]), 2, half_orders=True)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.level, [1.0, 0.0])
    again.advance(np.array([SELL_HALF, BUY_HALF]))
    np.testing.assert_array_equal(again.level, [0.5, 0.5])


def test_consensus_needs_the_same_half_order_from_every_member() -> None:
    level = np.array([0.0, 0.0, 0.5, 1.0])
    members = np.array([[HALF_, LONG_, FLAT_, HALF_], [HALF_, HALF_, FLAT_, FLAT_]])
    np.testing.assert_array_equal(consensus_orders(members, level, "target_half"),
                                  [BUY_HALF, HOLD, SELL_HALF, HOLD])


def test_metrics_read_levels_exposure_is_the_mean_level_and_round_trips_run_flat_to_flat() -> None:
    equity = np.array([100.0, 100.0, 105.0, 110.0, 99.0, 99.0, 120.0])
    position = np.array([0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 0.5])
    metrics = compute_metrics(equity, position, 8760.0)
    assert metrics["exposure"] == pytest.approx((0.5 + 1 + 0.5 + 0 + 0.5 + 0.5) / 6)
    assert metrics["trades"] == 5 and metrics["round_trips"] == 2
    assert metrics["win_rate"] == 0.5  # 100 -> 99 lost, 99 -> 120 (still open) won


def _paper_run(market, orders: np.ndarray) -> tuple[list[float], list[float], Account]:
    """``orders`` (one per step) through the paper broker: filled at each next open, marked at its close."""
    broker, account = PaperBroker(FEE, SLIP), Account.opening(10_000.0)
    equity, levels = [], []
    for t, order in enumerate(orders.tolist()):
        broker.fill_at_open(account, ORDER_NAMES[order], float(market.open[t + 1]))
        equity.append(account.mark(float(market.close[t + 1])))
        levels.append(account.position)
    return equity, levels, account


def test_paper_fills_equal_the_backtests_half_orders_bit_for_bit() -> None:
    market = random_walk_slice(400, seed=11)
    orders = np.random.default_rng(11).integers(0, 5, size=399)  # every order, no-ops included
    accounts = Accounts(market, 1, fee=FEE, slippage=SLIP, half_orders=True)
    accounts.reset()
    expected_equity, expected_levels = [], []
    for order in orders:
        accounts.advance(np.array([order]))
        expected_equity.append(float(accounts.equity[0]))
        expected_levels.append(float(accounts.level[0]))
    equity, levels, account = _paper_run(market, orders)
    assert equity == expected_equity and levels == expected_levels  # exactly, not approximately
    assert account.entry_price == float(accounts.entry[0]) and account.units == float(accounts.units[0])
    assert account.fees_paid == float(accounts.fees_paid[0]) and account.trades == int(accounts.trades[0])
    assert {0.5} < set(levels) and int(accounts.invalid[0]) > 0  # half positions and no-ops both happened


def test_paper_half_orders_with_fees_computed_by_hand() -> None:
    _, equity, levels = _run("numpy", [BUY_HALF, BUY_HALF, SELL_HALF, SELL_HALF])
    paper, paper_levels, account = _paper_run(make_slice([100.0, 110.0, 120.0, 90.0, 100.0]),
                                              np.array([BUY_HALF, BUY_HALF, SELL_HALF, SELL_HALF]))
    assert paper == equity and paper_levels == levels == [0.5, 1.0, 0.5, 0.0]
    u1, u2 = 5_000 / (1 + FEE) / (110 * (1 + SLIP)), 5_000 / (1 + FEE) / (120 * (1 + SLIP))
    assert paper[1] == pytest.approx((u1 + u2) * 120, rel=1e-12) and account.units == 0.0


@pytest.mark.parametrize(("before", "order", "filled", "holds", "after"), [
    (0.0, "buy_half", True, True, 0.5), (0.5, "buy_half", True, True, 1.0), (0.0, "buy", True, True, 1.0),
    (1.0, "sell_half", True, True, 0.5), (0.5, "sell_half", True, False, 0.0), (1.0, "sell", True, False, 0.0),
    (0.0, "buy_half", False, False, 0.0), (0.5, "buy_half", False, True, 0.5),  # nothing filled: as it was
    (1.0, "sell", True, True, 1.0), (0.5, "sell_half", True, True, 0.5),  # a sale left units: not flat yet
    (1.0, "sell_half", True, True, 0.5), (0.0, "buy", True, False, 0.0),  # partly; only dust bought: flat
])
def test_the_level_after_an_order(before, order, filled, holds, after) -> None:
    assert level_after(before, order, filled, holds) == after


def test_buy_budgets_spend_half_the_cash_from_flat_and_keep_the_cap_on_the_whole_position() -> None:
    account = Account.opening(1_000.0)
    assert buy_budget(account, "buy_half", None, FEE) == 500.0 and buy_budget(account, "buy", None, FEE) == 1_000.0
    assert buy_budget(account, "buy_half", 600.0, FEE) == 300.0  # half of what a long position may cost
    PaperBroker(FEE, SLIP, max_position=600.0).fill_at_open(account, "buy_half", 100.0)
    assert account.cash == 700.0 and account.position == 0.5
    assert account.held_cost(FEE) == pytest.approx(300.0, rel=1e-12)
    assert buy_budget(account, "buy_half", None, FEE) == 700.0  # from half: all the rest
    assert buy_budget(account, "buy_half", 600.0, FEE) == pytest.approx(300.0, rel=1e-12)  # what the cap leaves
    assert buy_budget(account, "buy", 600.0, FEE) == buy_budget(account, "buy_half", 600.0, FEE)


def test_the_journal_keeps_the_level_and_reads_journals_from_before_levels(tmp_path) -> None:
    path = tmp_path / "j.sqlite"
    half = Account(cash=500.0, units=0.01, entry_price=50_000.0, equity=1_000.0, peak=1_000.0, level=0.5)
    with Journal(path) as journal:
        journal.add_mark(HOUR_MS, 50_000.0, half, Account.opening(1_000.0))
        journal.add_mark(2 * HOUR_MS, 50_000.0, Account.opening(1_000.0), Account.opening(1_000.0))
        assert [m["level"] for m in journal.marks()] == [0.5, 0.0]
        restored, _ = account_from_mark(journal.marks()[0])
        assert restored.level == restored.position == 0.5 and restored.units == 0.01
    with sqlite3.connect(path) as db:  # a journal written before levels: no such table
        db.execute("DROP TABLE levels")
    db.close()
    with Journal(path) as journal:
        marks = journal.marks()
        assert [m["level"] for m in marks] == [None, None]
        assert [account_from_mark(m)[0].position for m in marks] == [1.0, 0.0]  # all-in: long if it held units


def _fake_broker(tmp_path, balances: dict[str, float], max_position: float = 1e9):
    """A LiveBroker on a FakeMarket where BTC costs 50,000 USDT, without fees or slippage."""
    clock = ReplayClock(HOUR_MS * 10 + 60_000)
    rows = [[HOUR_MS * k, 50_000.0, 50_100.0, 49_900.0, 50_000.0, 1.0] for k in range(20)]
    fake = FakeMarket(rows, clock, balances=balances, fee=0.0, slippage=0.0)
    fake.load_markets()
    journal = Journal(tmp_path / "live.sqlite")
    broker = LiveBroker(fake, "BTC/USDT", journal, lambda what, fn, *args: fn(*args), clock.now_ms, clock.sleep_until,
                        max_position, 0.0, 0.0, lambda text: text, lambda message: None)
    return fake, journal, broker


def _execute(broker, account, action: str, k: int) -> float:
    """Place ``action`` on candle k; returns the amount ordered (0 if none)."""
    account.min_units = broker.min_units(50_000.0)
    before = len(broker.journal.orders())
    broker.execute(account, action, HOUR_MS * k, 50_000.0)
    orders = broker.journal.orders()
    return orders[-1]["amount"] if len(orders) > before else 0.0


def test_live_half_orders_send_the_amounts_computed_by_hand(tmp_path) -> None:
    fake, journal, broker = _fake_broker(tmp_path, {"USDT": 1_000.0, "BTC": 0.0})
    account = Account.opening(1_000.0)
    assert _execute(broker, account, "buy_half", 1) == 0.01  # 500 USDT of the 1,000 at 50,000
    assert (account.position, account.cash, fake.balances["USDT"]) == (0.5, 500.0, 500.0)
    assert _execute(broker, account, "buy_half", 2) == 0.01  # the other 500
    assert account.position == 1.0 and account.cash == 0.0 and account.units == pytest.approx(0.02, abs=1e-15)
    assert account.entry_price == 50_000.0
    assert _execute(broker, account, "sell_half", 3) == 0.01  # half of 0.02
    assert account.position == 0.5 and fake.balances["BTC"] == pytest.approx(0.01, abs=1e-15)
    assert _execute(broker, account, "sell_half", 4) == 0.01  # all that is left
    assert account.position == 0.0 and account.units == pytest.approx(0.0, abs=1e-15) and account.cash == 1_000.0
    assert [o["side"] for o in journal.orders()] == ["buy", "buy", "sell", "sell"]
    assert all(o["status"] == "filled" for o in journal.orders())
    journal.close()


def test_live_max_position_caps_the_whole_position_built_in_halves(tmp_path) -> None:
    fake, journal, broker = _fake_broker(tmp_path, {"USDT": 1_000.0, "BTC": 0.0}, max_position=600.0)
    account = Account.opening(1_000.0)
    assert _execute(broker, account, "buy_half", 1) == 0.006  # half of the 600 a long position may cost
    assert _execute(broker, account, "buy_half", 2) == 0.006  # what the cap leaves: 600 - 300
    assert account.position == 1.0 and account.cash == pytest.approx(400.0)
    assert sum(f["quote"] for f in journal.fills()) == pytest.approx(600.0)
    assert _execute(broker, account, "buy", 3) == 0.0  # long already: nothing to buy
    journal.close()


def test_live_partial_fills_and_refusals_move_the_level_by_the_rule(tmp_path) -> None:
    fake, journal, broker = _fake_broker(tmp_path, {"USDT": 1_000.0, "BTC": 0.0})
    account = Account.opening(1_000.0)
    fake.partial = [0.5]
    assert _execute(broker, account, "buy_half", 1) == 0.01
    assert account.units == pytest.approx(0.005) and account.position == 0.5  # filled some: at its target
    fake.reject = [ccxt.InsufficientFunds("fakex: balance too low")]
    _execute(broker, account, "buy_half", 2)
    assert account.position == 0.5 and journal.orders()[-1]["status"] == "rejected"  # nothing filled: as it was
    assert _execute(broker, account, "buy_half", 3) == pytest.approx(750.0 / 50_000.0)  # all the rest
    assert account.position == 1.0
    fake.partial = [0.5]
    _execute(broker, account, "sell", 4)
    assert account.position == 1.0 and account.units > account.min_units  # a sale that left units: not flat
    _execute(broker, account, "sell", 5)
    assert account.position == 0.0 and fake.balances["BTC"] == pytest.approx(account.units, abs=1e-12)
    journal.close()


def test_a_live_sell_half_that_would_leave_dust_sells_everything(tmp_path) -> None:
    # 0.00015 BTC at 50,000: half of it (0.000075) would leave less than the 5 USDT the exchange sells.
    fake, journal, broker = _fake_broker(tmp_path, {"USDT": 0.0, "BTC": 0.00015})
    account = Account(cash=0.0, units=0.00015, entry_price=50_000.0, equity=7.5, peak=7.5, level=1.0)
    assert broker.min_units(50_000.0) == pytest.approx(1e-4)
    assert _execute(broker, account, "sell_half", 1) == 0.00015
    assert account.position == 0.0 and fake.balances["BTC"] == pytest.approx(0.0, abs=1e-15)
    journal.close()


def test_half_agent_trains_deterministically_and_backtests_in_levels(tmp_path) -> None:
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)
    config = tiny_config(episodes=2, action_mode="target_half", epsilon_decay_steps=200)

    def train(folder):
        trainer = Trainer(config, splits, tmp_path / folder)
        trainer.train()
        return trainer

    first, second = train("a"), train("b")
    for a, b in zip(first.agent.q_network.parameters(), second.agent.q_network.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    agent = AdaptiveDQNAgent.from_checkpoint(tmp_path / "a" / "best_model.pth")
    assert agent.action_size == 3 and agent.config.action_mode == "target_half"
    result = run_policy(splits.test, agent_policy(agent), "agent", 8760.0)
    position, orders = result.position[0], result.actions[0]
    assert set(np.unique(position)) <= {0.0, 0.5, 1.0}
    step = {HOLD: 0.0, BUY_HALF: 0.5, SELL_HALF: -0.5}
    for t, order in enumerate(orders):  # every order moves the level by its own step, never a no-op
        if order in step:
            assert position[t + 1] - position[t] == step[order]
        else:
            assert position[t + 1] == (1.0 if order == BUY else 0.0) != position[t]
    assert result.metrics["exposure"] == pytest.approx(position[1:].mean())
    # LiveTrader takes the model and names the orders each level allows.
    trader = LiveTrader.from_model(tmp_path / "a" / "best_model.pth")
    candles = synthetic_frame(420, seed=1).iloc[-400:]
    price = float(candles["close"].iloc[-1])
    allowed = {0.0: {"hold", "buy_half", "buy"}, 0.5: {"hold", "buy_half", "sell_half"},
               1.0: {"hold", "sell_half", "sell"}}
    for level, orders_there in allowed.items():
        assert trader.decide(candles, entry_price=price if level else 0.0, level=level) in orders_there
    assert trader.decide(candles, is_long=True, entry_price=price) in allowed[1.0]  # is_long: all-in


def test_trade_takes_a_trained_half_model_and_equals_its_backtest(tmp_path) -> None:
    frame = synthetic_frame(420, seed=1)
    Trainer(tiny_config(episodes=1, action_mode="target_half"), prepare_market(frame, data_days=None),
            tmp_path / "run").train()
    model, feed, journal = tmp_path / "run" / "best_model.pth", tmp_path / "feed.csv", tmp_path / "journal.sqlite"
    frame.to_csv(feed, index_label="timestamp")
    assert main(["trade", "--model", str(model), "--feed", str(feed), "--journal", str(journal)]) == 0
    _assert_session_equals_backtest(journal, _backtest(model, feed))


# --- trading a half model: paper and live -------------------------------------------------------------

@pytest.fixture(scope="module")
def half_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("half_trading")
    frame = market_frame()
    return half_rule_model(folder / "half.pth", frame), write_feed(folder / "feed.csv", frame)


def _backtest(model, feed) -> dict:
    """What `nexlify evaluate --model MODEL --data FEED` backtests: the agent and buy-and-hold."""
    agent = AdaptiveDQNAgent.from_checkpoint(model, device="cpu")
    frame = load_ohlcv(feed)
    market = market_slice_from_frame(frame, FeatureScaler.from_dict(agent.checkpoint_metadata["scaler"]))
    return backtest_with_baselines(agent, market, periods_per_year(detect_timeframe(frame)), agent.config)


@pytest.fixture(scope="module")
def half_backtest(half_files):
    return _backtest(*half_files)


def _assert_session_equals_backtest(journal, backtest) -> list[str]:
    """Equity, levels, trades, fees and metrics equal the backtest's exactly; returns the decisions."""
    with Journal(journal) as j:
        marks, decisions = j.marks(), [action for _, action in j.decisions()]
    agent = backtest["agent"]
    np.testing.assert_array_equal([m["equity"] for m in marks], agent.equity[0])
    np.testing.assert_array_equal([m["level"] for m in marks], agent.position[0])
    assert decisions[:-1] == [ORDER_NAMES[order] for order in agent.actions[0]]  # the last one is pending
    assert marks[-1]["trades"] == agent.metrics["trades"] and marks[-1]["fees_paid"] == agent.metrics["fees_paid"]
    assert session_report(journal)["session"] == agent.metrics
    return decisions


def test_a_paper_session_of_a_half_model_equals_its_backtest_bit_for_bit(half_files, half_backtest, tmp_path):
    model, feed = half_files
    journal, lines = tmp_path / "half.sqlite", []
    summary = run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lines.append)
    decisions = _assert_session_equals_backtest(journal, half_backtest)
    assert decisions.count("buy_half") >= 5 and decisions.count("sell_half") >= 5  # half orders really happen
    levels = half_backtest["agent"].position[0]
    status = [line for line in lines if "buy&hold" in line]
    assert len(status) == len(levels)
    for line, level in zip(status, levels, strict=True):
        assert ({0.0: "flat", 0.5: "half ", 1.0: "long "}[level] in line), line
    text = report_text(session_report(journal))
    assert f"Position at the end: {position_text(summary['level'], summary['units'])}" in text
    chart = tmp_path / "half.png"
    assert main(["trade", "--report", "--journal", str(journal), "--chart", str(chart)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stopped_half_session_resumes_at_its_level_and_still_equals_the_backtest(half_files, half_backtest,
                                                                                   tmp_path):
    model, feed = half_files
    journal = tmp_path / "resumed.sqlite"
    position, actions = half_backtest["agent"].position[0], half_backtest["agent"].actions[0]
    # Stop at half, right after deciding a half order: it is filled at the next open, after the restart.
    stop = next(t for t in range(10, len(actions)) if position[t] == 0.5 and actions[t] in (BUY_HALF, SELL_HALF))
    stamps = load_ohlcv(feed).index.as_unit("ms").asi8
    clock = ReplayClock(int(stamps[WARMUP_BARS]), end_ms=int(stamps[WARMUP_BARS + stop]) + HOUR_MS + HOUR_MS // 2)
    first = run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lambda line: None, clock=clock)
    assert first["level"] == 0.5 and first["pending"] == ORDER_NAMES[actions[stop]]
    lines: list[str] = []
    run_trade(TradeOptions(model=model, feed=feed, journal=journal), out=lines.append)
    assert [line for line in lines if "restart" in line and f"level 0.5, pending {first['pending']}" in line]
    _assert_session_equals_backtest(journal, half_backtest)


@pytest.fixture
def api_keys(monkeypatch):
    monkeypatch.setenv("NEXLIFY_API_KEY", KEY)
    monkeypatch.setenv("NEXLIFY_API_SECRET", SECRET)


def _journal_of(live: LiveRun) -> tuple[list[dict], dict[int, dict], dict[int, str]]:
    """Orders, marks by candle and decisions by candle of a live run."""
    with Journal(live.journal) as journal:
        return journal.orders(), {m["candle_ts"]: m for m in journal.marks()}, dict(journal.decisions())


def test_a_live_half_session_sizes_its_orders_by_the_level(half_files, api_keys, tmp_path, monkeypatch):
    model, _ = half_files
    live = LiveRun(tmp_path, monkeypatch, model, rows_of(market_frame()))
    summary = live.run()
    orders, marks, decided = _journal_of(live)
    fills = {f["client_id"]: f for f in live.journal_rows()[1]}
    assert all(o["status"] == "filled" for o in orders)
    actions = [decided[o["candle_ts"]] for o in orders]
    assert actions.count("buy_half") >= 5 and actions.count("sell_half") >= 5
    checked = {"from flat": 0, "from long": 0}
    for order, action in zip(orders, actions, strict=True):
        at, after = marks[order["candle_ts"]], marks.get(order["candle_ts"] + HOUR_MS)
        fill, level = fills[order["client_id"]], at["level"]
        if action == "buy_half" and level == 0.0:  # half of what a long position may cost
            spend = min(at["cash"], MAX_POSITION) / 2
            assert spend - 1e-6 * at["close"] * 1.01 < fill["quote"] <= spend  # the amount is truncated to 1e-6
            checked["from flat"] += 1
        if action == "sell_half" and level == 1.0:  # half the units
            assert fill["units"] == pytest.approx(at["units"] / 2, abs=1e-6)
            checked["from long"] += 1
        if after is not None:
            assert after["level"] == target_level(action, level)
            if after["level"] == 0.0:
                assert after["units"] < 1e-5  # sold all but dust
            if order["side"] == "buy":  # the cap bounds the whole position, fee included
                assert after["units"] * after["entry_price"] * (1 + FEE) <= MAX_POSITION * (1 + 1e-12)
    assert min(checked.values()) >= 2, checked
    assert_balances_match(live, summary)


def test_a_live_half_session_stopped_after_a_fill_resumes_as_if_never_stopped(half_files, api_keys, tmp_path,
                                                                              monkeypatch):
    model, _ = half_files
    rows = rows_of(market_frame())
    (tmp_path / "through").mkdir()
    through = LiveRun(tmp_path / "through", monkeypatch, model, rows)
    through.run()
    orders, marks, decided = _journal_of(through)
    # Stop right after a half-step between half and long filled, before the next candle's mark records it.
    steps = {(marks[o["candle_ts"]]["level"], marks[o["candle_ts"] + HOUR_MS]["level"]): o["candle_ts"]
             for o in orders[::-1] if o["candle_ts"] + HOUR_MS in marks}
    stop_ts = steps[(0.5, 1.0)]
    stop = next(k for k in range(len(rows)) if ts_of(rows, k) == stop_ts)
    stopped = LiveRun(tmp_path, monkeypatch, model, rows)
    stopped.run(end_k=stop)
    summary = stopped.run(start_ms=stopped.fake.clock.now_ms())
    restart = [e["detail"] for e in stopped.journal_rows()[2] if e["kind"] == "restart"]
    assert len(restart) == 1 and f"level {marks[stop_ts + HOUR_MS]['level']:g}" in restart[0]
    again_orders, again_marks, again_decided = _journal_of(stopped)
    assert again_decided == decided and [o["amount"] for o in again_orders] == [o["amount"] for o in orders]
    assert [m["level"] for m in again_marks.values()] == [m["level"] for m in marks.values()]
    assert_balances_match(stopped, summary)


def test_decide_refuses_a_level_the_model_cannot_hold(half_files, tmp_path) -> None:
    candles = market_frame().iloc[-100:]
    price = float(candles["close"].iloc[-1])
    all_in = LiveTrader.from_model(rule_model(tmp_path / "all_in.pth", market_frame()))
    half = LiveTrader.from_model(half_files[0])
    assert half.decide(candles, entry_price=price, level=0.5) in ("hold", "buy_half", "sell_half")
    assert all_in.decide(candles, entry_price=price, level=1.0) in ("hold", "buy", "sell")  # a whole level
    for trader, kwargs, message in [
        (all_in, {"level": 0.5, "entry_price": price}, r"level 0.5 is a half position, .*\(action_mode toggle\)"),
        (half, {"level": 0.3}, "level must be one of 0, 0.5, 1"),
        (half, {"level": 0.0, "is_long": True}, "contradicts itself"),
        (half, {"level": 0.5}, "entry_price must be > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            trader.decide(candles, **kwargs)
