"""Turning decisions into fills: on paper with the backtest's costs, or as real orders via ccxt.

``PaperBroker`` fills a decision at the next candle's open with the backtest's fee and slippage.
``LiveBroker`` places a market order right after the decision, with a client order id derived from
the session and the candle, so a retry (or a restart) finds the order instead of doubling it. It
records what the exchange reports: partial fills and rejections included. ``Credentials`` read API
keys from the environment only and ``redact`` keeps them out of every message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nexlify.errors import ConfigError, ExchangeError
from nexlify.trading.account import Account, Fill, buy_share, sell_share
from nexlify.trading.journal import Journal

KEY_ENV, SECRET_ENV, PASSWORD_ENV = "NEXLIFY_API_KEY", "NEXLIFY_API_SECRET", "NEXLIFY_API_PASSWORD"
ORDER_POLLS = 10  # seconds a market order may stay open before it is cancelled and recorded as is
BALANCE_TOLERANCE = 1e-6  # relative; exchanges round balances to their own precision
CCXT_DECIMAL_PLACES, CCXT_TICK_SIZE = 2, 4  # ccxt's precisionMode constants (ccxt is optional here)


@dataclass(frozen=True)
class Credentials:
    """API keys from environment variables (never from flags, never written anywhere)."""

    api_key: str
    secret: str
    password: str | None = None

    @classmethod
    def from_environment(cls) -> Credentials:
        key, secret = os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, "")
        if not key or not secret:
            raise ConfigError(f"--live needs API keys in the environment variables {KEY_ENV} and {SECRET_ENV} "
                              f"(and {PASSWORD_ENV} for exchanges with a passphrase); they are never read "
                              "from flags")
        return cls(key, secret, os.environ.get(PASSWORD_ENV) or None)

    def redact(self, text: str) -> str:
        for value in (self.api_key, self.secret, self.password):
            if value:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:  # dataclass's repr would print the keys
        return "Credentials(***)"


def make_exchange(exchange_id: str, credentials: Credentials | None = None, sandbox: bool = False) -> Any:
    """A ccxt exchange, with keys for live trading and its sandbox/testnet when asked for."""
    try:
        import ccxt
    except ImportError:
        raise ConfigError("nexlify trade needs ccxt: pip install nexlify[exchange] (or replay a --feed FILE)"
                          ) from None
    factory = getattr(ccxt, exchange_id, None)
    if not isinstance(factory, type):
        raise ConfigError(f"--exchange {exchange_id!r} is not a ccxt exchange id; use e.g. binance or kraken")
    config: dict[str, Any] = {"enableRateLimit": True}
    if credentials is not None:
        config.update(apiKey=credentials.api_key, secret=credentials.secret)
        if credentials.password:
            config["password"] = credentials.password
    exchange = factory(config)
    if sandbox:
        # ccxt switches to urls["test"]; an exchange without one fails inside set_sandbox_mode.
        if not (getattr(exchange, "urls", None) or {}).get("test"):
            raise ConfigError(f"--sandbox: {exchange_id} has no sandbox or testnet in ccxt; "
                              "choose an exchange that has one (e.g. binance)")
        exchange.set_sandbox_mode(True)
    return exchange


def _effective_side(action: str, account: Account) -> str | None:
    """The side of the order a decision asks for: a buy (or buy_half) below long, a sell (or
    sell_half) above flat; anything else changes nothing."""
    if action in ("buy", "buy_half") and account.position < 1.0:
        return "buy"
    if action in ("sell", "sell_half") and account.position > 0.0:
        return "sell"
    return None


def buy_budget(account: Account, action: str, max_position: float | None, fee: float) -> float:
    """Quote currency a buy or buy_half spends: its share (``buy_share``) of the cash or, with a cap,
    of what the cap leaves after what the open position cost: ``max_position`` bounds the whole
    position, so a half from flat spends half of what a long from flat would."""
    share = buy_share(action, account.position)
    if max_position is None:
        return account.cash * share
    return min(account.cash, max(max_position - account.held_cost(fee), 0.0)) * share


def amount_step(precision: Any, precision_mode: int) -> float:
    """The smallest amount increment a ccxt market's ``precision["amount"]`` allows (0.0 if unknown)."""
    if precision is None:
        return 0.0
    if precision_mode == CCXT_TICK_SIZE:
        return float(precision)
    if precision_mode == CCXT_DECIMAL_PLACES:
        return 10.0 ** -float(precision)
    return 0.0  # significant digits: no fixed step


def min_sell_units(market: dict[str, Any], precision_mode: int, price: float) -> float:
    """The smallest holding a ccxt ``market`` will take in a sell order at ``price``: its amount
    step, its minimum amount and its minimum order value, whichever is largest."""
    limits = market.get("limits") or {}
    min_amount = float((limits.get("amount") or {}).get("min") or 0.0)
    min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
    step = amount_step((market.get("precision") or {}).get("amount"), precision_mode)
    return max(step, min_amount, min_cost / price if price > 0 else 0.0)


class PaperBroker:
    """Fills at the next candle's open with the backtest's fee and slippage (``nexlify.env.portfolio``)."""

    live = False

    def __init__(self, fee: float, slippage: float, max_position: float | None = None) -> None:
        self.fee, self.slippage, self.max_position = fee, slippage, max_position

    def min_units(self, price: float) -> float:
        return 0.0  # paper units are exact: any holding can be sold

    def fill_at_open(self, account: Account, action: str | None, open_price: float) -> Fill | None:
        action = action or "hold"
        side = _effective_side(action, account)
        if side is None:
            return None
        before = account.position
        if side == "buy":
            spend = buy_budget(account, action, self.max_position, self.fee)
            fill = account.paper_buy(open_price, self.fee, self.slippage, spend)
        else:
            fill = account.paper_sell(open_price, self.fee, self.slippage, sell_share(action, before))
        account.settle_level(action, before, filled=True)
        return fill


class LiveBroker:
    """Market orders on a ccxt exchange, guarded: position cap, idempotent ids, reconciliation."""

    live = True

    def __init__(self, exchange: Any, symbol: str, journal: Journal, call: Callable[..., Any],
                 now_ms: Callable[[], int], sleep_until: Callable[[int], None], max_position: float,
                 fee: float, slippage: float, redact: Callable[[str], str], report: Callable[[str], Any]
                 ) -> None:
        self.exchange, self.symbol, self.journal = exchange, symbol, journal
        self.call, self.now_ms, self.sleep_until = call, now_ms, sleep_until
        self.max_position, self.fee, self.slippage = max_position, fee, slippage
        self.redact, self.report = redact, report
        self.session_tag = ""  # set by the session from its journal: order ids stay the same across restarts
        self.base, self.quote = symbol.split(":")[0].split("/")

    def fill_at_open(self, account: Account, action: str | None, open_price: float) -> None:
        return None  # live orders are filled when placed, right after the decision

    def client_order_id(self, candle_ts: int, side: str) -> str:
        return f"nx{self.session_tag}{candle_ts // 1000}{side[0]}"

    # --- placing ---------------------------------------------------------------------------
    def execute(self, account: Account, action: str, candle_ts: int, close: float) -> Fill | None:
        """Place the order ``action`` asks for, wait for its outcome and record it."""
        side = _effective_side(action, account)
        if side is None:
            return None
        if side == "buy":
            spend = buy_budget(account, action, self.max_position, self.fee)
            amount = spend / (close * (1.0 + self.slippage)) / (1.0 + self.fee)
        else:
            amount = self._sell_amount(account, action)
        amount = self._to_precision(amount)
        client_id = self.client_order_id(candle_ts, side)
        if amount <= 0:
            self._event(candle_ts, "order_skipped", f"{side} amount rounds to 0 at {self.symbol}'s precision")
            return None
        self.journal.add_order(client_id, candle_ts, side, amount, self.now_ms())  # before sending: a crash
        order = self._send(client_id, side, amount, candle_ts)                    # leaves a trace to look up
        if order is None:
            return None
        return self._settle(account, client_id, candle_ts, side, amount, order, action)

    def _sell_amount(self, account: Account, action: str) -> float:
        """Units a sell or sell_half sells: its share (``sell_share``) of the units, or all of them
        where what it would leave is less than the exchange will sell (dust that no order could sell)."""
        amount = account.units * sell_share(action, account.position)
        if account.units - self._to_precision(amount) < account.min_units:
            return account.units
        return amount

    def min_units(self, price: float) -> float:
        """The smallest holding this market will sell at ``price`` (from its loaded market data)."""
        market = (getattr(self.exchange, "markets", None) or {}).get(self.symbol) or {}
        return min_sell_units(market, getattr(self.exchange, "precisionMode", CCXT_TICK_SIZE), price)

    def _to_precision(self, amount: float) -> float:
        import ccxt

        to_precision = getattr(self.exchange, "amount_to_precision", None)
        if to_precision is None:
            return float(amount)
        try:
            return float(to_precision(self.symbol, amount))
        except ccxt.InvalidOrder:  # ccxt refuses amounts that round to zero
            return 0.0

    def _send(self, client_id: str, side: str, amount: float, candle_ts: int) -> dict | None:
        import ccxt

        attempt = 0
        while True:
            try:
                return self.exchange.create_order(self.symbol, "market", side, amount, None,
                                                  {"clientOrderId": client_id})
            except ccxt.DuplicateOrderId:
                found = self.call("looking up an order", self.find_order, client_id)
                if found is not None:
                    return found
                raise ExchangeError(f"{self.symbol}: the exchange reports order {client_id} as a duplicate but "
                                    "does not list it; check the exchange's order history") from None
            except ccxt.NetworkError as exc:
                # The order may have reached the exchange before the connection failed: look before resending.
                attempt += 1
                self._event(candle_ts, "network_error", f"placing {side} order {client_id} ({type(exc).__name__}: "
                            f"{exc}); retry {attempt}")
                self.sleep_until(self.now_ms() + int(min(2.0 ** (attempt - 1), 60.0) * 1000))
                found = self.call("looking up an order", self.find_order, client_id)
                if found is not None:
                    return found
            except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as exc:
                raise ExchangeError(self.redact(f"{self.symbol}: order refused ({type(exc).__name__}: {exc}). "
                                                "Fix: check the API key's permissions")) from None
            except ccxt.BaseError as exc:  # InsufficientFunds, InvalidOrder, ...: the exchange said no
                detail = self.redact(f"{type(exc).__name__}: {exc}")
                self.journal.update_order(client_id, "rejected", self.now_ms(), detail=detail)
                self._event(candle_ts, "rejected", f"{side} {amount:g} {self.base} rejected: {detail}")
                return None

    def find_order(self, client_id: str) -> dict | None:
        """The exchange's record of the order with ``client_id`` (None if it never arrived)."""
        has = getattr(self.exchange, "has", {}) or {}
        if has.get("fetchOrders"):
            orders = self.exchange.fetch_orders(self.symbol)
        else:
            orders = self.exchange.fetch_open_orders(self.symbol) + self.exchange.fetch_closed_orders(self.symbol)
        return next((o for o in orders if o.get("clientOrderId") == client_id), None)

    def _settle(self, account: Account, client_id: str, candle_ts: int, side: str, amount: float,
                order: dict, action: str) -> Fill | None:
        """Wait (bounded) for the order to finish, then record exactly what it did and where it took
        the position's level (``level_after``: the decided ``action``'s target if anything filled)."""
        for _ in range(ORDER_POLLS):
            if order.get("status") != "open":
                break
            self.sleep_until(self.now_ms() + 1000)
            order = self.call("checking an order", self.exchange.fetch_order, order["id"], self.symbol)
        if order.get("status") == "open":
            self.call("cancelling an order", self.exchange.cancel_order, order["id"], self.symbol)
            order = self.call("checking an order", self.exchange.fetch_order, order["id"], self.symbol)
        filled = float(order.get("filled") or 0.0)
        if filled <= 0:
            status = "rejected" if order.get("status") == "rejected" else "unfilled"
            self.journal.update_order(client_id, status, self.now_ms(), order.get("id"), 0.0,
                                      self.redact(str(order.get("status"))))
            self._event(candle_ts, status, f"{side} {amount:g} {self.base}: nothing filled "
                        f"(exchange status {order.get('status')})")
            return None
        fill = self._fill_from_order(side, filled, order)
        status = "filled" if filled >= amount * (1 - 1e-9) else "partial"
        with self.journal.transaction():
            self.journal.update_order(client_id, status, self.now_ms(), order.get("id"), filled,
                                      str(order.get("status")))
            self.journal.add_fill(candle_ts, fill, client_id)
            if status == "partial":
                self._event(candle_ts, "partial_fill", f"{side} filled {filled:g} of {amount:g} {self.base} "
                            f"(exchange status {order.get('status')})")
        before = account.position
        account.record_fill(fill)
        account.settle_level(action, before, filled=True)
        return fill

    def _fill_from_order(self, side: str, filled: float, order: dict) -> Fill:
        average = float(order.get("average") or 0.0) or float(order.get("cost") or 0.0) / filled
        cost = float(order.get("cost") or filled * average)
        fee_quote = fee_base = 0.0
        fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
        for fee in fees:
            if fee.get("currency") == self.quote:
                fee_quote += float(fee.get("cost") or 0.0)
            elif fee.get("currency") == self.base:
                fee_base += float(fee.get("cost") or 0.0)
        fee_total = fee_quote + fee_base * average
        if side == "buy":
            return Fill("buy", filled - fee_base, average, fee_total, cost + fee_quote)
        return Fill("sell", filled + fee_base, average, fee_total, cost - fee_quote)

    # --- reconciling -----------------------------------------------------------------------
    def balances(self) -> tuple[float, float, float]:
        """(total base, total quote, free quote) on the exchange."""
        balance = self.call("fetching balances", self.exchange.fetch_balance)
        total, free = balance.get("total", {}) or {}, balance.get("free", {}) or {}
        return float(total.get(self.base) or 0.0), float(total.get(self.quote) or 0.0), float(
            free.get(self.quote) or 0.0)

    def restore_fills(self, account: Account, mark_ts: int) -> None:
        """Apply the fills of orders placed on the candle of the last mark (``mark_ts``) or later,
        and move the level as they did (``level_after``, with the order decided on their candle).

        A candle's mark is written before its order is placed, so a session stopped after the order
        filled and before the next candle's mark would resume without the fill (and then stop on
        reconciling balances that are right).
        """
        for row in self.journal.fills(since=mark_ts):
            before = account.position
            account.record_fill(Fill(row["side"], row["units"], row["price"], row["fee"], row["quote"]))
            account.settle_level(self._decided(row["candle_ts"], row["side"]), before, filled=True)

    def _decided(self, candle_ts: int, side: str) -> str:
        """The order decided on ``candle_ts`` (buy, sell, buy_half or sell_half) that an order of ``side``
        placed then carried out."""
        return self.journal.decision(candle_ts) or side

    def recover_orders(self, account: Account) -> None:
        """Orders journaled but not settled when the last run stopped: record what the exchange did.

        An order the exchange never received is not placed now: its candle is stale.
        """
        for row in self.journal.orders(status="new"):
            order = self.call("looking up an order", self.find_order, row["client_id"])
            if order is None:
                self.journal.update_order(row["client_id"], "not_placed", self.now_ms(),
                                          detail="never reached the exchange before the restart")
                self._event(row["candle_ts"], "not_placed", f"order {row['client_id']} never reached the exchange; "
                            "not placed after the fact")
            else:
                self._settle(account, row["client_id"], row["candle_ts"], row["side"], row["amount"], order,
                             self._decided(row["candle_ts"], row["side"]))

    def reconcile(self, account: Account, reference: dict[str, float]) -> None:
        """Stop unless the exchange's balances are what the journal says they should be."""
        base, quote, _ = self.balances()
        expected_base = reference["base"] + account.units
        expected_quote = reference["quote"] - reference["opening_cash"] + account.cash
        for name, have, want in ((self.base, base, expected_base), (self.quote, quote, expected_quote)):
            if abs(have - want) > BALANCE_TOLERANCE * max(abs(want), 1.0):
                raise ExchangeError(
                    f"exchange balances disagree with the journal: {name} is {have:.8g} on the exchange but the "
                    f"journal expects {want:.8g}. The exchange is the source of truth: check for trades made "
                    "outside this session, then start a new session with a new --journal file")

    def _event(self, candle_ts: int, kind: str, detail: str) -> None:
        detail = self.redact(detail)
        self.journal.add_event(self.now_ms(), kind, detail, candle_ts)
        self.report(f"{kind}: {detail}")
