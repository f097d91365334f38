"""The accounting against hand-computed trades."""

import math

import pytest

from nexlify.env.portfolio import Portfolio, buy_fill, sell_fill


def test_two_ten_percent_round_trips_to_the_cent():
    # Per round trip: x (1/1.001) fee on buy, x 110*(1-0.0005)/(100*(1+0.0005)), x (1-0.001) fee on sell.
    p = Portfolio(10_000.0, fee=0.001, slippage=0.0005)
    for _ in range(2):
        assert p.buy(100.0)
        assert p.sell(110.0)
    assert round(p.cash, 2) == 12027.62
    assert p.units == 0.0
    assert p.trades == 4
    assert p.fees_paid == pytest.approx(43.9637878, abs=1e-6)
    assert p.equity(123.0) == p.cash


def test_sell_adds_proceeds_to_cash_kept_back():
    # The original replaced the balance by the proceeds; a sell must add to the cash already held.
    p = Portfolio(1_000.0, fee=0.0, slippage=0.0)
    p.buy(50.0)
    p.cash = 250.0  # cash kept back (e.g. deposited) while long
    p.sell(60.0)
    assert p.cash == pytest.approx(250.0 + 20.0 * 60.0)


def test_equity_is_cash_plus_position_and_only_costs_leak():
    p = Portfolio(5_000.0, fee=0.002, slippage=0.001)
    p.buy(200.0)
    assert p.cash == 0.0
    assert p.equity(200.0) == pytest.approx(p.units * 200.0)
    # Without a price move, the round trip loses exactly fees + slippage.
    p.sell(200.0)
    assert p.cash + p.fees_paid + p.slippage_paid == pytest.approx(5_000.0, rel=1e-12)


def test_invalid_actions_are_no_ops():
    p = Portfolio(1_000.0)
    assert not p.sell(10.0)
    assert p.cash == 1_000.0 and p.trades == 0
    assert p.buy(10.0)
    units = p.units
    assert not p.buy(12.0)
    assert p.units == units and p.trades == 1


def test_fill_formulas_work_on_arrays_and_floats_alike():
    import numpy as np

    units, fee, price = buy_fill(np.array([1_000.0, 2_000.0]), np.array([10.0, 20.0]), 0.001, 0.0005)
    scalar_units, scalar_fee, _ = buy_fill(2_000.0, 20.0, 0.001, 0.0005)
    assert units[1] == scalar_units and fee[1] == scalar_fee
    cash, fee_paid = sell_fill(units, np.array([11.0, 22.0]), 0.001, 0.0005)
    assert cash[0] == sell_fill(float(units[0]), 11.0, 0.001, 0.0005)[0]
    assert math.isclose(fee_paid[0] / (cash[0] + fee_paid[0]), 0.001)
