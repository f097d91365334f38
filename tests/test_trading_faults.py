"""A paper session against a fake ccxt exchange that misbehaves: every fault has its test.

Outages, restarts with candles missed while down, duplicate, resent, revised, late, skipped,
out-of-order and invalid candles. The rule: record everything, trade only fresh candles, decide at
most once per candle, and never crash on the network.
"""

from __future__ import annotations

import numpy as np
import pytest

from fake_exchange import HOUR, FakeMarket, register
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.data.features import WARMUP_BARS, FeatureScaler
from nexlify.data.market import market_slice_from_frame
from nexlify.trading.feeds import ReplayClock
from nexlify.trading.journal import Journal
from nexlify.trading.runner import TradeOptions, run_trade
from nexlify.training.pipeline import backtest_with_baselines
from trading_support import market_frame, rows_of, rule_model

MINUTE = 60_000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return rule_model(tmp_path_factory.mktemp("faults") / "model.pth", market_frame())


@pytest.fixture(scope="module")
def rows():
    return rows_of(market_frame())


@pytest.fixture(scope="module")
def backtest_equity(model):
    agent = AdaptiveDQNAgent.from_checkpoint(model, device="cpu")
    market = market_slice_from_frame(market_frame(), FeatureScaler.from_dict(agent.checkpoint_metadata["scaler"]))
    return backtest_with_baselines(agent, market, 8760.0, agent.config)["agent"].equity[0]


def ts_of(rows, k: int) -> int:
    """Open time of the k-th candle after the warm-up (the first one a session trades)."""
    return int(rows[WARMUP_BARS + k][0])


class Run:
    """A paper session on a FakeMarket from ``start_ms`` to ``end_ms`` of virtual time."""

    def __init__(self, tmp_path, monkeypatch, model, rows) -> None:
        self.tmp_path, self.monkeypatch, self.model, self.rows = tmp_path, monkeypatch, model, rows
        self.journal = tmp_path / "session.sqlite"
        self.lines: list[str] = []

    def market(self, start_ms: int, end_ms: int | None = None) -> FakeMarket:
        end = end_ms if end_ms is not None else int(self.rows[-1][0]) + 2 * HOUR
        fake = FakeMarket(self.rows, ReplayClock(start_ms, end_ms=end))
        register(self.monkeypatch, fake)
        return fake

    def run(self, fake: FakeMarket) -> dict:
        options = TradeOptions(model=self.model, exchange="fakex", journal=self.journal)
        return run_trade(options, out=self.lines.append, clock=fake.clock)

    def kinds(self) -> dict[int, str]:
        with Journal(self.journal) as journal:
            return journal.candle_kinds()

    def decided(self) -> list[int]:
        with Journal(self.journal) as journal:
            return [ts for ts, _ in journal.decisions()]

    def events(self, kind: str) -> list[dict]:
        with Journal(self.journal) as journal:
            return journal.events(kind)

    def marks(self) -> list[dict]:
        with Journal(self.journal) as journal:
            return journal.marks()


@pytest.fixture
def session(tmp_path, monkeypatch, model, rows):
    return Run(tmp_path, monkeypatch, model, rows)


def test_the_fake_exchange_path_equals_the_backtest(session, rows, backtest_equity):
    session.run(session.market(ts_of(rows, 0)))
    np.testing.assert_array_equal([m["equity"] for m in session.marks()], backtest_equity)
    assert not session.events("network_error") and not session.events("missed")


def test_an_outage_is_retried_with_backoff_and_its_candles_are_missed_not_traded(session, rows):
    fake = session.market(ts_of(rows, 0))
    k = 20
    fake.outages = [(ts_of(rows, k) + HOUR - MINUTE, ts_of(rows, k + 2) + HOUR + MINUTE)]
    summary = session.run(fake)
    kinds, decided = session.kinds(), session.decided()
    assert [kinds[ts_of(rows, k + i)] for i in range(3)] == ["missed", "missed", "traded"]
    assert ts_of(rows, k) not in decided and ts_of(rows, k + 1) not in decided and ts_of(rows, k + 2) in decided
    errors = session.events("network_error")
    assert len(errors) >= 6 and "RequestTimeout" in errors[0]["detail"]
    shown = [line for line in session.lines if "network error while fetching candles" in line]
    assert [line.split("retry ")[1] for line in shown[:4]] == ["1 in 1 s", "2 in 2 s", "3 in 4 s", "4 in 8 s"]
    assert summary["traded"] == len(rows) - WARMUP_BARS - 2 and summary["missed"] == 2
    marks = {m["candle_ts"]: m for m in session.marks()}
    assert ts_of(rows, k) in marks and ts_of(rows, k + 1) in marks  # missed candles are still marked


@pytest.mark.parametrize(("down_after_close_ms", "last_kind"), [(10 * MINUTE, "missed"), (3 * MINUTE, "traded")])
def test_restart_resumes_the_account_and_records_candles_missed_while_down(session, rows, down_after_close_ms,
                                                                            last_kind):
    k = 30
    first = session.run(session.market(ts_of(rows, 0), end_ms=ts_of(rows, k) + HOUR + HOUR // 2))
    stopped_mark = session.marks()[-1]
    assert stopped_mark["candle_ts"] == ts_of(rows, k)
    # Down while candles k+1, k+2 and k+3 close; back down_after_close_ms after k+3's close.
    session.run(session.market(ts_of(rows, k + 3) + HOUR + down_after_close_ms))
    kinds, decided = session.kinds(), session.decided()
    assert [kinds[ts_of(rows, k + i)] for i in (1, 2, 3)] == ["missed", "missed", last_kind]
    assert (ts_of(rows, k + 3) in decided) == (last_kind == "traded")
    assert ts_of(rows, k + 1) not in decided and ts_of(rows, k + 2) not in decided
    assert kinds[ts_of(rows, k + 4)] == "traded"
    restart = session.events("restart")
    assert len(restart) == 1 and f"cash {stopped_mark['cash']:,.2f}" in restart[0]["detail"]
    assert f"{stopped_mark['units']:.8g} units" in restart[0]["detail"]
    if first["pending"] in ("buy", "sell") and (first["pending"] == "buy") != (first["units"] > 0):
        with Journal(session.journal) as journal:
            fills = journal.fills()
        # The decision taken before the stop is filled at the next open, as the order would have been.
        assert any(f["candle_ts"] == ts_of(rows, k + 1) for f in fills)
    assert len(decided) == len(set(decided))


def test_duplicate_resent_and_revised_candles_are_recorded_and_change_nothing(session, rows, backtest_equity):
    fake = session.market(ts_of(rows, 0))
    fake.duplicate = {ts_of(rows, 10)}
    revised = list(rows[WARMUP_BARS + 5])
    revised[5] += 1.0  # another volume
    fake.revised = {ts_of(rows, 5): revised}
    fake.resend_at = {ts_of(rows, 20) + HOUR: [ts_of(rows, 5), ts_of(rows, 6)]}
    session.run(fake)
    duplicates = {e["candle_ts"] for e in session.events("duplicate")}
    assert duplicates == {ts_of(rows, 10), ts_of(rows, 6)}
    assert [e["candle_ts"] for e in session.events("revised")] == [ts_of(rows, 5)]
    np.testing.assert_array_equal([m["equity"] for m in session.marks()], backtest_equity)
    decided = session.decided()
    assert len(decided) == len(set(decided)) == len(rows) - WARMUP_BARS


def test_a_candle_published_too_late_is_missed(session, rows):
    fake = session.market(ts_of(rows, 0))
    fake.late = {ts_of(rows, 12): 20 * MINUTE}
    session.run(fake)
    kinds, decided = session.kinds(), session.decided()
    assert kinds[ts_of(rows, 12)] == "missed" and ts_of(rows, 12) not in decided
    assert ts_of(rows, 11) in decided and ts_of(rows, 13) in decided


def test_a_skipped_candle_is_a_gap_and_recorded_as_late_when_it_comes(session, rows):
    fake = session.market(ts_of(rows, 0))
    fake.late = {ts_of(rows, 12): 2 * HOUR + 5 * MINUTE}  # after candle 13, with candle 14
    session.run(fake)
    kinds, decided = session.kinds(), session.decided()
    assert [e["candle_ts"] for e in session.events("gap")] == [ts_of(rows, 13)]
    assert [e["candle_ts"] for e in session.events("late")] == [ts_of(rows, 12)]
    assert kinds[ts_of(rows, 12)] == "late" and ts_of(rows, 12) not in decided
    assert kinds[ts_of(rows, 13)] == "traded" and kinds[ts_of(rows, 14)] == "traded"
    assert not session.events("duplicate")  # asking again from the hole is not the exchange's duplicate


def test_out_of_order_candles_are_recorded_and_sorted(session, rows):
    fake = session.market(ts_of(rows, 0))
    k = 40
    fake.outages = [(ts_of(rows, k) + HOUR - MINUTE, ts_of(rows, k + 2) + HOUR + MINUTE)]
    fake.reverse_after_ms = ts_of(rows, k) + HOUR
    session.run(fake)
    events = session.events("out_of_order")
    assert events and events[0]["at_ms"] > ts_of(rows, k + 2) + HOUR
    kinds = session.kinds()
    assert [kinds[ts_of(rows, k + i)] for i in range(3)] == ["missed", "missed", "traded"]


def test_an_invalid_candle_is_recorded_and_not_used(session, rows):
    bad = [list(r) for r in rows]
    bad[WARMUP_BARS + 7][2] = bad[WARMUP_BARS + 7][3] * 0.5  # high below low
    session.rows = bad
    session.run(session.market(ts_of(rows, 0)))
    assert session.events("invalid") and ts_of(rows, 7) not in session.kinds()
    assert [e["candle_ts"] for e in session.events("gap")] == [ts_of(rows, 8)]


def test_a_replay_needs_no_ccxt_but_an_exchange_does(monkeypatch, rows):
    import sys

    from nexlify.errors import ConfigError
    from nexlify.trading.broker import make_exchange
    from nexlify.trading.feeds import CandleFeed, ReplayExchange

    monkeypatch.setitem(sys.modules, "ccxt", None)
    clock = ReplayClock(ts_of(rows, 0))
    feed = CandleFeed(ReplayExchange(rows, clock), "feed", HOUR, "1h", clock)
    assert len(feed.history(400)) == WARMUP_BARS
    with pytest.raises(ConfigError, match=r"pip install nexlify\[exchange\]"):
        make_exchange("binance")


def test_sandbox_is_refused_where_the_exchange_has_none():
    from nexlify.errors import ConfigError
    from nexlify.trading.broker import make_exchange

    assert make_exchange("binance", sandbox=True).urls["api"]["public"].startswith("https://testnet.")
    with pytest.raises(ConfigError, match="kraken has no sandbox or testnet"):
        make_exchange("kraken", sandbox=True)
    with pytest.raises(ConfigError, match="not a ccxt exchange id"):
        make_exchange("no-such-exchange")


def test_replay_speed_waits_its_share_of_real_time_and_the_replay_ends():
    from nexlify.trading.feeds import FeedEnded

    slept: list[float] = []
    clock = ReplayClock(0, end_ms=3 * HOUR, speed=3600, real_sleep=slept.append)
    clock.sleep_until(2 * HOUR)
    assert slept == [2.0] and clock.now_ms() == 2 * HOUR  # two replayed hours in two real seconds
    with pytest.raises(FeedEnded):
        clock.sleep_until(3 * HOUR + 1)
