"""One trading account as a session sees it: cash, units held, costs, equity marks.

Paper fills use ``nexlify.env.portfolio``'s ``buy_fill``/``sell_fill``, the formulas every backtest
uses, in the same order of operations, so a paper session's equity equals the backtest's bit for bit.
Live fills record what the exchange reports instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nexlify.env.portfolio import buy_fill, sell_fill


@dataclass(frozen=True)
class Fill:
    """One executed (or partly executed) order: units moved, the average price, the fee in quote."""

    side: str  # "buy" | "sell"
    units: float
    price: float
    fee: float
    quote: float  # quote currency spent (buy, fee included) or received (sell, fee deducted)


@dataclass
class Account:
    """Cash and units of one spot market, and the running figures the agent's state needs."""

    cash: float
    units: float = 0.0
    entry_price: float = 0.0
    equity: float = 0.0
    peak: float = 0.0
    fees_paid: float = 0.0
    trades: int = 0
    # The smallest holding the exchange will sell (its amount step, minimum amount and minimum order
    # value): less is dust, left behind by fees taken in the base currency or by amount rounding.
    # Dust counts as flat, or the agent would believe it is long and never buy again.
    min_units: float = 0.0

    @classmethod
    def opening(cls, balance: float) -> Account:
        """A flat account holding ``balance`` in cash."""
        return cls(cash=float(balance), equity=float(balance), peak=float(balance))

    @property
    def is_long(self) -> bool:
        return self.units > 0.0 and self.units >= self.min_units

    def paper_buy(self, open_price: float, fee: float, slippage: float, budget: float | None = None) -> Fill:
        """Spend all cash (or ``budget``, if smaller) at ``open_price`` with the backtest's costs."""
        spend = self.cash if budget is None or budget >= self.cash else float(budget)
        units, fee_paid, fill_price = buy_fill(spend, open_price, fee, slippage)
        self.units = units
        self.fees_paid = self.fees_paid + fee_paid
        self.cash = self.cash - spend  # exactly 0.0 when all cash is spent, as in the environment
        self.entry_price = fill_price
        self.trades += 1
        return Fill("buy", units, fill_price, fee_paid, spend)

    def paper_sell(self, open_price: float, fee: float, slippage: float) -> Fill:
        """Sell every unit at ``open_price`` with the backtest's costs."""
        units = self.units
        cash_in, fee_paid = sell_fill(units, open_price, fee, slippage)
        self.cash = self.cash + cash_in
        self.fees_paid = self.fees_paid + fee_paid
        self.units = 0.0
        self.entry_price = 0.0
        self.trades += 1
        return Fill("sell", units, open_price * (1.0 - slippage), fee_paid, cash_in)

    def record_fill(self, fill: Fill) -> None:
        """Apply a fill reported by an exchange (possibly partial)."""
        if fill.units <= 0:
            return
        if fill.side == "buy":
            held = self.units
            self.units = held + fill.units
            self.entry_price = (held * self.entry_price + fill.units * fill.price) / self.units
            self.cash = self.cash - fill.quote
        else:
            self.units = max(self.units - fill.units, 0.0)
            self.cash = self.cash + fill.quote
            if not self.is_long:
                self.entry_price = 0.0
        self.fees_paid = self.fees_paid + fill.fee
        self.trades += 1

    def mark(self, close: float) -> float:
        """Mark to ``close``: update equity and its peak; returns the equity."""
        self.equity = self.cash + self.units * close
        if self.equity > self.peak:
            self.peak = self.equity
        return self.equity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
