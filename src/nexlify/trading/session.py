"""The candle loop of a trading session, paper or live.

Each time a candle closes: record it, fill the decision taken on the previous candle (paper: at this
candle's open, with the backtest's costs), mark the account and a buy-and-hold benchmark at its
close, build the state exactly as in training (``nexlify.live.build_state`` with the model's saved
scaler), decide, and, live, place the order. Everything goes into the journal in one transaction
per candle, so a restarted session resumes with the same cash and position.

Rules the loop keeps:
* a decision is taken at most once per candle (the journal's key);
* only a fresh candle is traded: the newest closed one, received within ``fresh_window_ms`` of its
  close. Candles that closed while the session was down or the network was out are recorded as
  missed; the account is marked on them but nothing is decided;
* candles sent twice, revised, out of order, late or skipped by the exchange are recorded as events
  and never traded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd

from nexlify.data.features import feature_set_of, live_history_bars, warmup_bars
from nexlify.env.actions import ORDER_NAMES, to_orders
from nexlify.errors import ConfigError, ExchangeError
from nexlify.live import LiveTrader, build_state
from nexlify.trading.account import Account, position_text
from nexlify.trading.feeds import CandleFeed, Clock, FeedEnded, candle_problem
from nexlify.trading.journal import Journal, account_from_mark

# The recursive EMAs behind MACD forget their starting point long before this many candles, so
# features over the last FEATURE_BARS candles (or twice the feature set's warm-up, if longer) equal
# features over the whole history.
FEATURE_BARS = 2_000
POLL_DELAY_MS = 2_000  # ask for a candle this long after its close: exchanges publish it within seconds
RUIN_FRACTION = 0.1  # the backtest's environment stops an account at 10% of its initial balance
HOLE_WATCH_BARS = 24  # how long a candle the exchange skipped is still asked for
RESUMABLE_SETTINGS = ("source", "symbol", "timeframe", "mode", "model_sha256", "fee", "slippage")


@dataclass(frozen=True)
class SessionSettings:
    """What a session trades and how; stored in the journal and checked again on every restart."""

    source: str  # "binance:BTC/USDT:1h" or "replay:/abs/path.csv"
    symbol: str
    timeframe: str
    timeframe_ms: int
    mode: str  # "paper" | "live"
    initial_balance: float
    fee: float
    slippage: float
    max_position: float | None
    model_sha256: str


class TradingSession:
    """One market, one model, one journal. ``run()`` trades until the feed ends or Ctrl-C."""

    def __init__(self, trader: LiveTrader, journal: Journal, feed: CandleFeed, broker: Any,
                 settings: SessionSettings, clock: Clock, out: Callable[[str], Any] = print,
                 fresh_window_ms: int | None = None, redact: Callable[[str], str] = lambda text: text) -> None:
        self.trader, self.journal, self.feed, self.broker = trader, journal, feed, broker
        self.settings, self.clock, self._out, self.redact = settings, clock, out, redact
        self.tf = settings.timeframe_ms
        self.fresh_window_ms = fresh_window_ms if fresh_window_ms is not None else self.tf // 10
        self.poll_ms = max(min(10_000, self.tf // 20), 1)
        feature_set = feature_set_of(trader.scaler.feature_names)
        self.warmup_bars, self.history_bars = warmup_bars(feature_set), live_history_bars(feature_set)
        self.feature_bars = max(FEATURE_BARS, 2 * self.warmup_bars)
        feed.on_retry = lambda message: self.event("network_error", message)
        self.account = Account.opening(settings.initial_balance)
        self.benchmark = Account.opening(settings.initial_balance)
        self.pending: str | None = None  # paper: the decision waiting for the next open
        self.stopped = False  # ruined: no more decisions
        self.traded = self.missed = 0
        self.holes: set[int] = set()  # open times of recent candles the exchange skipped
        self._revisions_seen: set[tuple[int, tuple[float, ...]]] = set()

    # --- output ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self._out(self.redact(text))

    def event(self, kind: str, detail: str, candle_ts: int | None = None, show: bool = True) -> None:
        detail = self.redact(detail)
        self.journal.add_event(self.clock.now_ms(), kind, detail, candle_ts)
        if show:
            self.say(f"{_time(candle_ts) if candle_ts is not None else _time(self.clock.now_ms())}  {kind}: {detail}")

    # --- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin a new journal (with warm-up history) or resume the one given."""
        meta = self.journal.meta()
        if not meta:
            self._begin()
        else:
            self._resume(meta)

    def _begin(self) -> None:
        rows = self.feed.history(self.history_bars)
        if len(rows) < self.warmup_bars:
            raise ExchangeError(f"{self.settings.source}: only {len(rows)} closed candles of history; the features "
                                f"need at least {self.warmup_bars}. Fix: use a longer file or an older market")
        meta = asdict(self.settings) | {"session_tag": secrets.token_hex(4), "created_ms": self.clock.now_ms()}
        if self.broker.live:
            self.broker.session_tag = meta["session_tag"]
            base, quote, free_quote = self.broker.balances()
            if free_quote < self.settings.initial_balance:
                raise ConfigError(f"--balance {self.settings.initial_balance:g}: the exchange holds only "
                                  f"{free_quote:.8g} {self.broker.quote} free; lower --balance")
            meta["reference"] = {"base": base, "quote": quote, "opening_cash": self.settings.initial_balance}
        with self.journal.transaction():
            self.journal.set_meta(meta)
            now = self.clock.now_ms()
            for row in rows:
                self.journal.add_candle(row, "warmup", now)
            self.event("start", f"{self.settings.mode} session on {self.settings.source}, balance "
                       f"{self.settings.initial_balance:,.2f}; {len(rows)} candles of warm-up history", show=False)
        self.say(f"{self.settings.mode} session on {self.settings.source}: warm-up history of {len(rows)} "
                 f"candles up to {_time(rows[-1][0])}; the first decision comes at the next close")

    def _resume(self, meta: dict[str, Any]) -> None:
        wanted = asdict(self.settings)
        for key in RESUMABLE_SETTINGS:
            if meta.get(key) != wanted[key]:
                raise ConfigError(f"--journal {self.journal.path} belongs to another session ({key} "
                                  f"{meta.get(key)!r}, here {wanted[key]!r}); give a new --journal file to start one")
        # The balance a session started with is its own: a resumed session keeps it whatever --balance says.
        self.settings = replace(self.settings, initial_balance=meta["initial_balance"])
        mark = self.journal.last_mark()
        if mark is not None:
            self.account, self.benchmark = account_from_mark(mark)
            # As when the mark was taken, so fills applied again below settle as they did then.
            self.account.min_units = self.broker.min_units(mark["close"])
            self.pending = None if self.broker.live else self.journal.decision(mark["candle_ts"])
            self.stopped = self.account.equity <= RUIN_FRACTION * self.settings.initial_balance
        else:
            self.account = Account.opening(self.settings.initial_balance)
            self.benchmark = Account.opening(self.settings.initial_balance)
        if self.broker.live:
            self.broker.session_tag = meta["session_tag"]
            if mark is not None:
                self.broker.restore_fills(self.account, mark["candle_ts"])
            self.broker.recover_orders(self.account)
            self.broker.reconcile(self.account, meta["reference"])
        self.event("restart", f"resumed after {_time(self.journal.last_candle_ts())}: cash "
                   f"{self.account.cash:,.2f}, {self.account.units:.8g} units, level {self.account.position:g}"
                   + (f", pending {self.pending}" if self.pending else ""))

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Trade until the feed ends (replays) or forever (live markets; Ctrl-C stops)."""
        self.start()
        try:
            while not self.stopped:
                last = self.journal.last_candle_ts()
                due = last + 2 * self.tf + POLL_DELAY_MS  # the next candle's close, plus a moment
                if self.clock.now_ms() < due:
                    self.clock.sleep_until(due)
                # Ask again for recent candles the exchange skipped: they may still come, late.
                self.holes = {t for t in self.holes if t >= last - HOLE_WATCH_BARS * self.tf}
                since = min(self.holes | {last + self.tf})
                if not self.ingest(self.feed.closed_since(since), since):
                    self.clock.sleep_until(self.clock.now_ms() + self.poll_ms)
        except FeedEnded:
            pass
        return self.summary()

    def ingest(self, rows: list[list[float]], since: int) -> bool:
        """Record candles the exchange sent for a request from ``since``; trade the fresh one.

        Returns True if any candle was new.
        """
        now = self.clock.now_ms()
        stamps = [int(r[0]) for r in rows if candle_problem(r) is None]
        if any(b < a for a, b in zip(stamps, stamps[1:], strict=False)):
            self.event("out_of_order", f"candles arrived in the order {', '.join(_time(t) for t in stamps)}; sorted")
        newest = max(stamps, default=None)
        new = False
        seen: set[int] = set()
        for row in sorted(rows, key=lambda r: float(r[0])):
            problem = candle_problem(row)
            if problem is not None:
                self.event("invalid", f"ignored a candle the exchange sent: {problem}")
                continue
            ts = int(row[0])
            recorded = self.journal.candle(ts)
            if recorded is not None:
                self._known(ts, row, recorded, repeated=ts in seen or ts < since)
                seen.add(ts)
                continue
            seen.add(ts)
            last = self.journal.last_candle_ts()
            if ts < last:
                self.holes.discard(ts)
                self.journal.add_candle(row, "late", now)
                self.event("late", f"arrived after newer candles (at {_time(now)}); recorded, not traded", ts)
                continue
            if ts > last + self.tf:
                skipped = range(last + self.tf, ts, self.tf)
                self.holes.update(skipped)
                self.event("gap", f"{len(skipped)} candle(s) after {_time(last)} not received from the exchange", ts)
            fresh = ts == newest and now - (ts + self.tf) <= self.fresh_window_ms and not self.stopped
            self._on_candle(row, fresh, now)
            new = True
        return new

    def _known(self, ts: int, row: list[float], recorded: list[float], repeated: bool) -> None:
        """A candle already in the journal: a duplicate if the exchange sent it unasked, a revision if it differs."""
        values = tuple(float(x) for x in row[1:6])
        if list(values) != [float(x) for x in recorded[1:6]]:
            if (ts, values) in self._revisions_seen:  # asked again while watching a hole: reported already
                return
            self._revisions_seen.add((ts, values))
            self.event("revised", f"received again with other values {[float(x) for x in row[1:6]]}; the first "
                       f"version {recorded[1:6]} was used and is kept", ts)
        elif repeated:
            self.event("duplicate", "received again; ignored", ts)

    def _on_candle(self, row: list[float], fresh: bool, now: int) -> None:
        ts, open_price, close = int(row[0]), float(row[1]), float(row[4])
        action = None
        with self.journal.transaction():
            self.journal.add_candle(row, "traded" if fresh else "missed", now)
            fill = self.broker.fill_at_open(self.account, self.pending, open_price)
            if fill is not None:
                self.journal.add_fill(ts, fill)
            if not self.benchmark.is_long and self.journal.has_decisions():  # bought after the first decision
                self.benchmark.paper_buy(open_price, self.settings.fee, self.settings.slippage)
            self.account.min_units = self.broker.min_units(close)
            self.account.level = self.account.position  # a holding that became dust is flat from here on
            self.account.mark(close)
            self.benchmark.mark(close)
            self.journal.add_mark(ts, close, self.account, self.benchmark)
            self.pending = None
            if fresh:
                action = self._decide(ts)
                self.journal.add_decision(ts, action, now)
                self.pending = action
                self.traded += 1
            else:
                self.missed += 1
                self.event("missed", f"closed {(now - ts - self.tf) / 1000:.0f} s before it was received; "
                           "marked, not traded", ts, show=False)
        if action is not None and self.broker.live:
            self.broker.execute(self.account, action, ts, close)
        self._status(ts, close, action)
        if self.account.equity <= RUIN_FRACTION * self.settings.initial_balance and not self.stopped:
            self.stopped = True
            self.event("stopped", f"equity {self.account.equity:,.2f} fell to {RUIN_FRACTION:.0%} of the start; "
                       "no more decisions (the backtest stops an account there too)", ts)

    def _decide(self, ts: int) -> str:
        rows = self.journal.candles(last=self.feature_bars)
        frame = pd.DataFrame([r[1:6] for r in rows], columns=["open", "high", "low", "close", "volume"],
                             index=pd.to_datetime([r[0] for r in rows], unit="ms", utc=True).rename("timestamp"))
        position = self.account.position
        state = build_state(frame, self.trader.scaler, entry_price=self.account.entry_price,
                            equity=self.account.equity, peak_equity=self.account.peak, level=position)
        # The backtest's own policy: the greedy action of the host Q-function (an ensemble's mean Q) on a
        # (1, state) batch, as the order that carries it out (a position-target model names the position).
        action = self.trader.greedy_action(state)
        return ORDER_NAMES[to_orders(action, position, self.trader.agent.config.action_mode)]

    def _status(self, ts: int, close: float, action: str | None) -> None:
        start = self.settings.initial_balance
        position = position_text(self.account.position, self.account.units)
        self.say(f"{_time(ts)}  close {close:>12,.2f}  {action or 'missed':<9}  {position:<16}  equity "
                 f"{self.account.equity:>12,.2f} ({self.account.equity / start - 1:+.2%})  buy&hold "
                 f"{self.benchmark.equity / start - 1:+.2%}")

    def summary(self) -> dict[str, Any]:
        return {"traded": self.traded, "missed": self.missed, "equity": self.account.equity,
                "cash": self.account.cash, "units": self.account.units, "level": self.account.position,
                "benchmark_equity": self.benchmark.equity,
                "pending": self.pending, "stopped": self.stopped}


def _time(ms: int | None) -> str:
    return "-" if ms is None else pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
