"""The accounting of one long-only spot account: cash, units held, fees, slippage. Nothing else.

Fills happen at a candle's open. A buy spends all cash (or a share of it): the notional N satisfies
N + fee*N = the cash spent and buys N / (open*(1+slippage)) units. A sell receives
units*open*(1-slippage) for the units sold (all, or a share), pays the fee on that, and ADDS the rest
to the cash already held (the original lost the cash kept back here).

``buy_fill`` and ``sell_fill`` are plain arithmetic, so the same formulas serve floats (this
``Portfolio``), numpy arrays and torch tensors (the vectorised environments): one source of truth.
"""

from __future__ import annotations

from typing import TypeVar

Number = TypeVar("Number")


def buy_fill(cash: Number, open_price: Number, fee: float, slippage: float) -> tuple:
    """Units bought, fee paid and fill price when spending all ``cash`` at ``open_price``."""
    fill_price = open_price * (1.0 + slippage)
    notional = cash / (1.0 + fee)
    return notional / fill_price, notional * fee, fill_price


def sell_fill(units: Number, open_price: Number, fee: float, slippage: float) -> tuple:
    """Cash received (net of fee) and fee paid when selling ``units`` at ``open_price``."""
    proceeds = units * (open_price * (1.0 - slippage))
    fee_paid = proceeds * fee
    return proceeds - fee_paid, fee_paid


class Portfolio:
    """One account. Invariant: equity(price) == cash + units * price at every step."""

    def __init__(self, initial_balance: float = 10_000.0, fee: float = 0.001, slippage: float = 0.0005) -> None:
        self.initial_balance, self.fee, self.slippage = initial_balance, fee, slippage
        self.reset()

    def reset(self) -> None:
        """Back to all cash, no position, no costs."""
        self.cash = float(self.initial_balance)
        self.units = 0.0
        self.entry_price = 0.0
        self.fees_paid = 0.0
        self.slippage_paid = 0.0
        self.trades = 0

    @property
    def is_long(self) -> bool:
        return self.units > 0.0

    def buy(self, open_price: float, share: float = 1.0) -> bool:
        """Spend ``share`` of the cash (all of it by default) at ``open_price``; False (no-op) when
        there is no cash to spend. The entry price becomes the position's average fill price."""
        if self.cash <= 0.0:
            return False
        spend = self.cash * share
        units, fee_paid, fill_price = buy_fill(spend, open_price, self.fee, self.slippage)
        self.slippage_paid = self.slippage_paid + units * (fill_price - open_price)
        if self.is_long:
            self.entry_price = (self.units * self.entry_price + units * fill_price) / (self.units + units)
        else:
            self.entry_price = fill_price
        self.units = self.units + units
        self.fees_paid = self.fees_paid + fee_paid
        self.cash = self.cash - spend
        self.trades += 1
        return True

    def sell(self, open_price: float, share: float = 1.0) -> bool:
        """Sell ``share`` of the units (all of them by default) at ``open_price``; False (no-op) when
        flat."""
        if not self.is_long:
            return False
        units = self.units * share
        cash_in, fee_paid = sell_fill(units, open_price, self.fee, self.slippage)
        self.slippage_paid = self.slippage_paid + units * (open_price * self.slippage)
        self.cash = self.cash + cash_in
        self.fees_paid = self.fees_paid + fee_paid
        self.units = 0.0 if share >= 1.0 else self.units - units
        if self.units == 0.0:
            self.entry_price = 0.0
        self.trades += 1
        return True

    def equity(self, price: float) -> float:
        """Cash plus the position marked at ``price``."""
        return self.cash + self.units * price

    def unrealized_return(self, price: float) -> float:
        """Return of the open position since its fill (0 when flat)."""
        return price / self.entry_price - 1.0 if self.is_long else 0.0
