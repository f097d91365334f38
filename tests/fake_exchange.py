"""Fake ccxt exchanges for tests: candle downloads, and a whole market to trade on with faults.

``FakeExchange`` serves deterministic candles through ``fetch_ohlcv`` the way real exchanges page
them. ``FakeMarket`` extends it into a market replaying given candles on a virtual clock, with a
spot account and market orders, and injects the faults a trading session must survive: network
outages, duplicate, resent, revised, late and out-of-order candles, rejected orders, partial fills
and lost order responses.
"""

from __future__ import annotations

import math
from typing import Any

import ccxt
import pandas as pd

from nexlify.trading.feeds import ReplayClock

HOUR = 3_600_000
NOW = pd.Timestamp("2025-01-01 12:30", tz="UTC").value // 1_000_000  # mid-candle: 12:00 is still open


class FakeExchange:
    """Behaves like a ccxt exchange's fetch_ohlcv: pages capped at ``page_cap`` rows from ``since``,
    candles up to and including the still-open one, deterministic prices."""

    rateLimit = 50  # ms
    has = {"fetchOHLCV": True}

    def __init__(self, now_ms: int = NOW, page_cap: int = 500, listed_ms: int = 0,
                 data_end_ms: int | None = None, errors: list[Exception] | None = None,
                 permanent_error: Exception | None = None) -> None:
        self.now_ms, self.page_cap, self.listed_ms = now_ms, page_cap, listed_ms
        self.data_end_ms = data_end_ms  # simulates an exchange that stops returning data
        self.errors = list(errors or [])
        self.permanent_error = permanent_error
        self.calls: list[tuple[str, str, int, int]] = []
        self.rows_returned = 0

    @staticmethod
    def candle(ts: int) -> list[float] | None:
        k = ts // HOUR
        close = 100.0 + 10.0 * math.sin(k / 24.0) + (k % 7) * 0.1
        open_ = 100.0 + 10.0 * math.sin((k - 1) / 24.0) + ((k - 1) % 7) * 0.1
        return [ts, open_, max(open_, close) + 0.5, min(open_, close) - 0.5, close, float(k % 13)]

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> list[list[float]]:
        self.calls.append((symbol, timeframe, int(since or 0), int(limit or 0)))
        if self.permanent_error is not None:
            raise self.permanent_error
        if self.errors:
            raise self.errors.pop(0)
        first = max(int(since or 0), self.listed_ms)
        first += -first % HOUR
        last_open = self.now_ms - self.now_ms % HOUR  # the still-open candle is included, like real APIs
        if self.data_end_ms is not None:
            last_open = min(last_open, self.data_end_ms)
        count = min(limit or self.page_cap, self.page_cap)
        rows = [row for t in range(first, last_open + 1, HOUR) if (row := self.candle(t)) is not None][:count]
        self.rows_returned += len(rows)
        return rows


class FakeMarket(FakeExchange):
    """A spot market replaying ``rows`` (hourly ccxt rows) on ``clock``, with orders and faults.

    Market orders fill at the open of the candle forming now, moved by ``slippage``, and pay ``fee``
    in the quote currency, like the backtest's cost model. Fault knobs (all optional):
    ``outages`` [(start_ms, end_ms)] raise NetworkError; ``late`` {ts: delay_ms} holds a candle back
    after its close; ``duplicate`` {ts} sends a candle twice in a response; ``resend_at`` {when_ms: [ts]}
    adds old candles to the first response from ``when_ms`` on; ``revised`` {ts: row} serves other
    values for a candle once it was sent; ``reverse_after_ms`` reverses responses from then on;
    ``reject`` [exception] refuses the next orders; ``partial`` [fraction] fills the next orders
    partly; ``lose_responses`` loses the response of that many next orders after placing them;
    ``stay_open`` [polls] leaves the next orders open for that many ``fetch_order`` calls;
    ``fee_in_base`` takes buy fees in the base currency (as Binance does without BNB), which leaves
    holdings off the amount step: dust after a sell.
    """

    precisionMode = 4  # ccxt.TICK_SIZE
    AMOUNT_STEP, MIN_AMOUNT, MIN_COST = 1e-6, 1e-5, 5.0

    id = "fakex"
    has = {"fetchOHLCV": True, "fetchOrders": True}

    def __init__(self, rows: list[list[float]], clock: ReplayClock, balances: dict[str, float] | None = None,
                 fee: float = 0.001, slippage: float = 0.0005, symbol: str = "BTC/USDT") -> None:
        super().__init__(page_cap=1000)
        self.table = {int(r[0]): list(r) for r in rows}
        self.clock, self.fee, self.slippage, self.symbol = clock, fee, slippage, symbol
        self.balances = dict(balances or {"USDT": 20_000.0, "BTC": 0.0})
        self.config: dict[str, Any] = {}
        self.sandbox = False
        self.urls = {"api": "https://fakex.invalid/api", "test": "https://testnet.fakex.invalid/api"}
        self.outages: list[tuple[int, int]] = []
        self.late: dict[int, int] = {}
        self.duplicate: set[int] = set()
        self.resend_at: dict[int, list[int]] = {}
        self.revised: dict[int, list[float]] = {}
        self.reverse_after_ms: int | None = None
        self.reject: list[Exception] = []
        self.partial: list[float] = []
        self.lose_responses = 0
        self.stay_open: list[int] = []
        self.cancelled: list[str] = []
        self.orders: list[dict[str, Any]] = []
        self.sent: set[int] = set()
        self.fee_in_base = False
        self.markets: dict[str, Any] = {}

    @property
    def now_ms(self) -> int:  # type: ignore[override]
        return self.clock.now_ms()

    @now_ms.setter
    def now_ms(self, value: int) -> None:  # the base class sets it; time comes from the clock here
        pass

    def _check_network(self) -> None:
        now = self.clock.now_ms()
        if any(start <= now < end for start, end in self.outages):
            raise ccxt.RequestTimeout("fakex GET /klines timed out")

    def candle(self, ts: int) -> list[float] | None:  # type: ignore[override]
        row = self.table.get(ts)
        if row is None or self.clock.now_ms() < ts + HOUR + self.late.get(ts, 0) and ts in self.late:
            return None
        if ts in self.revised and ts in self.sent:
            return list(self.revised[ts])
        return list(row)

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> list[list[float]]:
        self._check_network()
        rows = super().fetch_ohlcv(symbol, timeframe, since, limit)
        due = [when for when in self.resend_at if when <= self.clock.now_ms()]
        rows = [r for when in due for t in self.resend_at.pop(when) if (r := self.candle(t))] + rows
        rows = [copy for r in rows for copy in ([r, list(r)] if int(r[0]) in self.duplicate else [r])]
        if self.reverse_after_ms is not None and self.clock.now_ms() >= self.reverse_after_ms:
            rows = rows[::-1]
        now = self.clock.now_ms()
        self.sent.update(int(r[0]) for r in rows if int(r[0]) + HOUR <= now)
        return rows

    # --- account and orders ----------------------------------------------------------------
    def set_sandbox_mode(self, enabled: bool) -> None:
        self.sandbox = enabled

    def load_markets(self) -> dict[str, Any]:
        self._check_network()
        self.markets = {self.symbol: {
            "symbol": self.symbol, "precision": {"amount": self.AMOUNT_STEP},
            "limits": {"amount": {"min": self.MIN_AMOUNT}, "cost": {"min": self.MIN_COST}}}}
        return self.markets

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        text = f"{math.floor(amount * 1e6) / 1e6:.6f}"  # truncates, like ccxt
        if float(text) == 0.0:  # and refuses what truncates to nothing, like ccxt
            raise ccxt.InvalidOrder(f"fakex amount of {symbol} must be greater than minimum amount precision of 1e-06")
        return text

    def fetch_balance(self) -> dict[str, Any]:
        self._check_network()
        return {"total": dict(self.balances), "free": dict(self.balances), "used": {k: 0.0 for k in self.balances}}

    def create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                     params: dict | None = None) -> dict[str, Any]:
        self._check_network()
        client_id = (params or {}).get("clientOrderId")
        if any(o["clientOrderId"] == client_id for o in self.orders):
            raise ccxt.DuplicateOrderId(f"fakex: duplicate clientOrderId {client_id}")
        if self.reject:
            raise self.reject.pop(0)
        now = self.clock.now_ms()
        open_price = self.table[now - now % HOUR][1]
        base, quote = symbol.split("/")
        fraction = self.partial.pop(0) if self.partial else 1.0
        filled = amount * fraction
        price = open_price * (1 + self.slippage if side == "buy" else 1 - self.slippage)
        cost = filled * price
        fee = cost * self.fee
        if side == "buy":
            if cost + fee > self.balances[quote] + 1e-9:
                raise ccxt.InsufficientFunds(f"fakex: {quote} balance too low")
            if self.fee_in_base:
                fee = filled * self.fee
                self.balances[quote] -= cost
                self.balances[base] += filled - fee
            else:
                self.balances[quote] -= cost + fee
                self.balances[base] += filled
        else:
            if filled > self.balances[base] + 1e-12:
                raise ccxt.InsufficientFunds(f"fakex: {base} balance too low")
            self.balances[base] -= filled
            self.balances[quote] += cost - fee
        order = {"id": str(len(self.orders) + 1), "clientOrderId": client_id, "symbol": symbol, "side": side,
                 "type": type, "amount": amount, "filled": filled, "remaining": amount - filled,
                 "status": "closed" if fraction == 1.0 else "canceled", "average": price, "cost": cost,
                 "fee": {"cost": fee, "currency": base if side == "buy" and self.fee_in_base else quote},
                 "timestamp": now, "polls_left": 0}
        if self.stay_open:
            order["status"], order["polls_left"] = "open", self.stay_open.pop(0)
        self.orders.append(order)
        if self.lose_responses:
            self.lose_responses -= 1
            raise ccxt.RequestTimeout("fakex POST /order timed out")
        return dict(order)

    def fetch_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None
                     ) -> list[dict[str, Any]]:
        self._check_network()
        return [dict(o) for o in self.orders]

    def fetch_order(self, id: str, symbol: str | None = None) -> dict[str, Any]:
        order = next(o for o in self.orders if o["id"] == id)
        if order["status"] == "open":
            order["polls_left"] -= 1
            if order["polls_left"] <= 0:
                order["status"] = "closed" if order["filled"] == order["amount"] else "canceled"
        return dict(order)

    def cancel_order(self, id: str, symbol: str | None = None) -> dict[str, Any]:
        order = next(o for o in self.orders if o["id"] == id)
        order["status"] = "canceled"
        self.cancelled.append(id)
        return dict(order)


def register(monkeypatch: Any, market: FakeMarket) -> None:
    """Make ``ccxt.fakex(config)`` return ``market`` (keeping the config, as a real exchange would)."""

    class Factory:
        def __new__(cls, config: dict[str, Any]) -> FakeMarket:  # type: ignore[misc]
            market.config = dict(config)
            return market

    monkeypatch.setattr(ccxt, "fakex", Factory, raising=False)
