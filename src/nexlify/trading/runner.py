"""Wiring for ``nexlify trade``: options -> model, journal, feed, broker, session; and the guards.

Paper is the default. ``--live`` needs an explicit confirmation flag, a ``--max-position`` cap and
API keys from the environment; ``--feed FILE`` replays a file through the same session code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexlify.data.exchange import timeframe_to_ms
from nexlify.data.features import feature_set_of, warmup_bars
from nexlify.errors import ConfigError
from nexlify.io import check_input_file, check_model_files
from nexlify.live import LiveTrader
from nexlify.trading.broker import Credentials, LiveBroker, PaperBroker, make_exchange
from nexlify.trading.feeds import CandleFeed, Clock, ReplayClock, ReplayExchange, SystemClock, load_replay_rows
from nexlify.trading.journal import Journal
from nexlify.trading.session import SessionSettings, TradingSession


@dataclass(frozen=True)
class TradeOptions:
    """``nexlify trade``'s flags."""

    model: Path
    device: str = "cpu"
    # More models: with ``model`` they trade as one mean-Q ensemble (e.g. the best models of three seeds).
    ensemble: tuple[Path, ...] = ()
    balance: float | None = None  # None: the model's training balance
    journal: Path | None = None  # None: default_journal(options)
    # The market traded, polled from the exchange...
    exchange: str = "binance"
    symbol: str = "BTC/USDT"
    timeframe: str = "1h"
    # ...or candles replayed from a file instead (paper only; speed None: as fast as possible).
    feed: Path | None = None
    speed: float | None = None
    # Real orders and their safety catches: live needs confirm_live and max_position (check_options).
    live: bool = False
    confirm_live: bool = False
    sandbox: bool = False
    max_position: float | None = None  # the most quote currency held in the market at once (paper too)

    @property
    def models(self) -> tuple[Path, ...]:
        """Every model the session trades with: one, or the members of an ensemble."""
        return (self.model, *self.ensemble)


def check_options(options: TradeOptions) -> None:
    """Refuse unsafe or contradictory flag combinations before anything is opened."""
    check_model_files(options.models)
    if options.feed is not None:
        check_input_file("--feed", options.feed)
    if options.speed is not None and options.feed is None:
        raise ConfigError("--speed sets how fast a --feed FILE is replayed; give --feed FILE too")
    if options.max_position is not None and not options.max_position > 0:
        raise ConfigError(f"--max-position must be a positive amount of quote currency, got {options.max_position}")
    if options.sandbox and not options.live:
        raise ConfigError("--sandbox applies to --live orders (paper trading places none); add --live or drop it")
    if options.live:
        if options.feed is not None:
            raise ConfigError("--live places real orders and cannot replay a --feed file; drop one of them")
        if not options.confirm_live:
            raise ConfigError("--live places REAL orders with real money; add --confirm-live to say you mean it "
                              "(try --sandbox first)")
        if options.max_position is None:
            raise ConfigError("--live needs --max-position AMOUNT: the most quote currency (e.g. USDT) the "
                              "session may hold in the market at once")


def default_journal(options: TradeOptions) -> Path:
    market = options.feed.stem if options.feed else f"{options.exchange}_{options.symbol}_{options.timeframe}"
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", market)
    return options.model.parent / "trading" / f"{'live' if options.live else 'paper'}_{slug}.sqlite"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def models_sha256(paths: tuple[Path, ...]) -> str:
    """A model file's SHA-256, or for an ensemble one of its members' sorted digests (a mean-Q ensemble
    does not depend on their order): a resumed journal must go on with the same models."""
    digests = [_sha256(path) for path in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(",".join(sorted(digests)).encode()).hexdigest()


def build_session(options: TradeOptions, journal: Journal, out: Callable[[str], Any] = print,
                  clock: Clock | None = None) -> TradingSession:
    """Everything a session needs, from the options; ``clock`` replaces wall time (tests)."""
    check_options(options)
    trader = LiveTrader.from_models(options.models, device=options.device)
    config = trader.agent.config
    balance = options.balance if options.balance is not None else config.initial_balance
    credentials = Credentials.from_environment() if options.live else None
    redact = credentials.redact if credentials else (lambda text: text)

    def report(message: str) -> None:
        out(redact(message))

    if options.feed is not None:
        rows = load_replay_rows(options.feed)
        warmup = warmup_bars(feature_set_of(trader.scaler.feature_names))
        if len(rows) < warmup + 2:
            raise ConfigError(f"--feed {options.feed}: {len(rows)} candles; a replay needs at least "
                              f"{warmup + 2} ({warmup} of warm-up for this model's features, then candles to trade)")
        timeframe_ms = _replay_timeframe_ms(rows)
        timeframe = _timeframe_label(timeframe_ms)
        last = journal.last_candle_ts()
        # A fresh replay starts after the file's warm-up candles (as `nexlify evaluate --data FILE` does);
        # a resumed one where its journal stopped: replayed time does not pass while the session is down.
        start = int(rows[warmup][0]) if last is None else last + timeframe_ms
        clock = clock or ReplayClock(start, end_ms=int(rows[-1][0]) + 2 * timeframe_ms, speed=options.speed)
        exchange: Any = ReplayExchange(rows, clock)
        source, symbol = f"replay:{options.feed.resolve()}", options.feed.stem
    else:
        timeframe, timeframe_ms = options.timeframe, timeframe_to_ms(options.timeframe)
        clock = clock or SystemClock()
        exchange = make_exchange(options.exchange, credentials, sandbox=options.sandbox)
        source, symbol = f"{options.exchange}:{options.symbol}:{timeframe}", options.symbol
    # Retries print here until the session exists; from then on it also journals them.
    feed = CandleFeed(exchange, symbol, timeframe_ms, timeframe, clock, on_retry=report, redact=redact)
    if options.feed is None:
        markets = feed.call("loading markets", exchange.load_markets)
        if options.symbol not in markets:
            raise ConfigError(f"--symbol {options.symbol} is not traded on {options.exchange}; use a symbol such "
                              "as BTC/USDT")
    settings = SessionSettings(
        source=source, symbol=symbol, timeframe=timeframe, timeframe_ms=timeframe_ms,
        mode="live" if options.live else "paper", initial_balance=float(balance), fee=config.fee,
        slippage=config.slippage, max_position=options.max_position, model_sha256=models_sha256(options.models))
    if options.live:
        broker: Any = LiveBroker(exchange, options.symbol, journal, feed.call, clock.now_ms, clock.sleep_until,
                                 float(options.max_position or 0.0), config.fee, config.slippage, redact, report)
    else:
        broker = PaperBroker(config.fee, config.slippage, options.max_position)
    return TradingSession(trader, journal, feed, broker, settings, clock, out=out, redact=redact)


def _replay_timeframe_ms(rows: list[list[float]]) -> int:
    import numpy as np

    return int(np.median(np.diff([int(r[0]) for r in rows])))


def _timeframe_label(ms: int) -> str:
    from nexlify.training.pipeline import timeframe_label

    return timeframe_label(ms / 1000)


def run_trade(options: TradeOptions, out: Callable[[str], Any] = print, clock: Clock | None = None
              ) -> dict[str, Any]:
    """Run a session to the end of its feed (or Ctrl-C); returns its summary."""
    check_options(options)
    path = options.journal or default_journal(options)
    created, folder_created = not path.exists(), not path.parent.exists()
    with Journal(path, durable=options.live) as journal:
        try:
            session = build_session(options, journal, out=out, clock=clock)
        except BaseException:
            if created:  # a session that never started leaves no empty journal (nor its new folder) behind
                for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    leftover.unlink(missing_ok=True)
                if folder_created and not any(path.parent.iterdir()):
                    path.parent.rmdir()
            raise
        summary = session.run()
    summary["journal"] = str(path)
    return summary
