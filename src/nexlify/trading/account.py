"""One trading account as a session sees it: cash, units held, position level, costs, equity marks.

Paper fills use ``nexlify.env.portfolio``'s ``buy_fill``/``sell_fill``, the formulas every backtest
uses, in the same order of operations, so a paper session's equity equals the backtest's bit for bit.
Live fills record what the exchange reports instead.

The position level is 0 (flat), 0.5 (half) or 1 (long), as in the backtest's step
(``nexlify.env.accounts``): buy goes to long, sell to flat, buy_half and sell_half one half-step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nexlify.env.actions import HALF
from nexlify.env.portfolio import buy_fill, sell_fill


@dataclass(frozen=True)
class Fill:
    """One executed (or partly executed) order: units moved, the average price, the fee in quote."""

    side: str  # "buy" | "sell"
    units: float
    price: float
    fee: float
    quote: float  # quote currency spent (buy, fee included) or received (sell, fee deducted)


def target_level(order: str, level: float) -> float:
    """The level ``order`` moves a position at ``level`` to (an order that cannot move it: ``level``)."""
    if order == "buy":
        return 1.0
    if order == "sell":
        return 0.0
    if order == "buy_half":
        return min(level + HALF, 1.0)
    if order == "sell_half":
        return max(level - HALF, 0.0)
    return level


def level_after(before: float, order: str, filled: bool, holds: bool) -> float:
    """The level after ``order`` was placed at level ``before``; ``filled``: anything filled, ``holds``:
    a sellable holding is left.

    The rule holds up under partial fills and restarts because it needs only the order and whether
    it filled: nothing filled leaves the level as it was; anything filled reaches the order's target,
    except that a sale leaving a sellable holding has not reached flat (the level stays, so the agent
    sells the rest); no sellable holding is flat. On paper every order fills whole, so this is the
    backtest's level exactly.
    """
    if not holds:
        return 0.0
    if not filled:
        return before
    target = target_level(order, before)
    return before if target == 0.0 else target


def buy_share(order: str, level: float) -> float:
    """The share of what is left to spend that ``order`` (buy or buy_half) spends at ``level``: all of
    it, or half of it for the half-step from flat (the backtest's arithmetic, for equal fills)."""
    return 1.0 if order == "buy" else HALF / (1.0 - level)


def sell_share(order: str, level: float) -> float:
    """The share of the units ``order`` (sell or sell_half) sells at ``level``: all of them, or half
    of them for the half-step from long (the backtest's arithmetic, for equal fills)."""
    return 1.0 if order == "sell" else HALF / level


def position_text(level: float, units: float) -> str:
    """A position in a few characters: "flat", "half 0.0123" or "long 0.0246" (the units held)."""
    if level <= 0.0:
        return "flat"
    return f"{'half' if level < 1.0 else 'long'} {units:.6g}"


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
    level: float = 0.0  # where the fills took the position (level_after); ``position`` is what counts

    @classmethod
    def opening(cls, balance: float) -> Account:
        """A flat account holding ``balance`` in cash."""
        return cls(cash=float(balance), equity=float(balance), peak=float(balance))

    @property
    def is_long(self) -> bool:
        return self.units > 0.0 and self.units >= self.min_units

    @property
    def position(self) -> float:
        """The position level the agent sees and orders start from: 0 while nothing sellable is held."""
        return self.level if self.is_long else 0.0

    def held_cost(self, fee: float) -> float:
        """What the open position cost, fee included: its units at their average fill price."""
        return self.units * self.entry_price * (1.0 + fee) if self.position > 0.0 else 0.0

    def settle_level(self, order: str, before: float, filled: bool) -> None:
        """Set the level after ``order``, placed at level ``before``, filled (partly) or not."""
        self.level = level_after(before, order, filled, self.is_long)

    def paper_buy(self, open_price: float, fee: float, slippage: float, spend: float | None = None) -> Fill:
        """Spend ``spend`` (default: all cash) at ``open_price`` with the backtest's costs; the entry
        price becomes the position's average fill price."""
        spend = self.cash if spend is None else spend
        units, fee_paid, fill_price = buy_fill(spend, open_price, fee, slippage)
        held = self.units
        if held > 0.0:
            self.entry_price = (held * self.entry_price + units * fill_price) / (held + units)
        else:
            self.entry_price = fill_price
        self.units = held + units
        self.fees_paid = self.fees_paid + fee_paid
        self.cash = self.cash - spend  # exactly 0.0 when all cash is spent, as in the environment
        self.trades += 1
        return Fill("buy", units, fill_price, fee_paid, spend)

    def paper_sell(self, open_price: float, fee: float, slippage: float, share: float = 1.0) -> Fill:
        """Sell ``share`` of the units (default: all) at ``open_price`` with the backtest's costs."""
        units = self.units * share
        cash_in, fee_paid = sell_fill(units, open_price, fee, slippage)
        self.cash = self.cash + cash_in
        self.fees_paid = self.fees_paid + fee_paid
        closed = share >= 1.0
        self.units = 0.0 if closed else self.units - units
        if closed:
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
