"""Live trading, end to end against a fake ccxt exchange: orders, guards, recovery, and the keys' secrecy."""

from __future__ import annotations

import ccxt
import pytest

from fake_exchange import HOUR, FakeMarket, register
from nexlify.cli import main
from nexlify.errors import ExchangeError
from nexlify.trading.broker import min_sell_units
from nexlify.trading.journal import Journal
from nexlify.trading.report import session_report
from trading_support import (
    KEY,
    MAX_POSITION,
    SECRET,
    LiveRun,
    assert_balances_match,
    market_frame,
    rows_of,
    rule_model,
    ts_of,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return rule_model(tmp_path_factory.mktemp("live") / "model.pth", market_frame())


@pytest.fixture(scope="module")
def rows():
    return rows_of(market_frame())


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("NEXLIFY_API_KEY", KEY)
    monkeypatch.setenv("NEXLIFY_API_SECRET", SECRET)


@pytest.fixture
def live(tmp_path, monkeypatch, model, rows):
    return LiveRun(tmp_path, monkeypatch, model, rows)


def test_live_session_places_capped_idempotent_orders_and_records_them(live, tmp_path, capsys, caplog):
    summary = live.run()
    orders, fills, events = live.journal_rows()
    assert live.fake.sandbox is True
    assert live.fake.config["apiKey"] == KEY and live.fake.config["secret"] == SECRET  # only to the exchange
    assert len(orders) >= 6 and all(o["status"] == "filled" for o in orders)
    assert [o["client_id"] for o in orders] == [o["clientOrderId"] for o in live.fake.orders]
    assert len({o["client_id"] for o in orders}) == len(orders)
    assert all(o["client_id"].startswith("nx") and len(o["client_id"]) <= 36 for o in orders)
    for fill, placed in zip(fills, live.fake.orders, strict=True):
        assert fill["units"] == placed["filled"] and fill["price"] == placed["average"]
        if fill["side"] == "buy":
            assert fill["quote"] <= MAX_POSITION  # the cap holds, fee included
    assert_balances_match(live, summary)
    # Orders are placed right after the decision, at the next candle's open.
    decided = {o["candle_ts"] for o in orders}
    assert all(placed["timestamp"] - placed["timestamp"] % HOUR - HOUR in decided for placed in live.fake.orders)
    # The keys appear in no output, log or file.
    assert main(["trade", "--report", "--journal", str(live.journal)]) == 0
    assert session_report(live.journal)["session"]["trades"] == len(fills)
    captured = capsys.readouterr()
    texts = ["\n".join(live.lines), captured.out, captured.err, caplog.text]
    texts += [path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file()]
    assert len(texts) >= 6  # output, logs, the journal (and its WAL) and the chart were all read
    for text in texts:
        assert KEY not in text and SECRET not in text


def test_an_exchange_error_quoting_the_key_is_redacted(live, model, monkeypatch, capsys):
    def refuse() -> None:
        raise ccxt.AuthenticationError(f'fakex {{"code":-2015,"msg":"Invalid API-key {KEY}, secret {SECRET}"}}')

    live.fake.load_markets = refuse
    register(monkeypatch, live.fake)
    argv = ["trade", "--model", str(model), "--exchange", "fakex", "--live", "--confirm-live", "--max-position",
            "100", "--journal", str(live.journal)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: fakex: loading markets failed (AuthenticationError")
    assert KEY not in captured.err + captured.out and SECRET not in captured.err + captured.out
    assert "***" in err[0] and not live.journal.exists()


def test_live_needs_keys_from_the_environment(model, monkeypatch, capsys):
    monkeypatch.delenv("NEXLIFY_API_KEY")
    assert main(["trade", "--model", str(model), "--live", "--confirm-live", "--max-position", "100"]) == 2
    assert "NEXLIFY_API_KEY and NEXLIFY_API_SECRET" in capsys.readouterr().err
    assert main(["trade", "--model", str(model), "--api-key", KEY]) == 2  # there is no such flag


@pytest.mark.parametrize("reached_exchange", [True, False])
def test_a_retried_order_is_never_doubled(live, reached_exchange):
    if reached_exchange:
        live.fake.lose_responses = 1  # placed, but the answer is lost
    else:  # the connection fails before the order arrives, twice
        original = live.fake.create_order
        calls = {"n": 0}

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise ccxt.NetworkError("fakex: connection reset")
            return original(*args, **kwargs)

        live.fake.create_order = flaky
    summary = live.run()
    orders, fills, events = live.journal_rows()
    assert [o["client_id"] for o in orders] == [o["clientOrderId"] for o in live.fake.orders]
    assert len(fills) == len(live.fake.orders) and all(o["status"] == "filled" for o in orders)
    assert [e for e in events if e["kind"] == "network_error" and "placing buy order" in e["detail"]]
    assert_balances_match(live, summary)


def test_a_rejected_order_is_recorded_and_the_session_goes_on(live):
    live.fake.reject = [ccxt.InsufficientFunds("fakex: Account has insufficient balance for requested action")]
    summary = live.run()
    orders, fills, events = live.journal_rows()
    rejected = [o for o in orders if o["status"] == "rejected"]
    assert len(rejected) == 1 and "InsufficientFunds" in rejected[0]["detail"]
    assert [e["candle_ts"] for e in events if e["kind"] == "rejected"] == [rejected[0]["candle_ts"]]
    assert rejected[0]["client_id"] not in {f["client_id"] for f in fills}
    assert len(live.fake.orders) == len(orders) - 1 >= 4  # later orders were placed and filled
    assert_balances_match(live, summary)


def test_a_partial_fill_is_recorded_as_it_happened_and_reconciles_on_restart(live, rows):
    live.fake.partial = [0.5]
    first = live.run(end_k=60)
    orders, fills, events = live.journal_rows()
    assert orders[0]["status"] == "partial" and orders[0]["filled"] == pytest.approx(orders[0]["amount"] / 2)
    assert fills[0]["units"] == orders[0]["filled"]
    assert [e["kind"] for e in events if e["candle_ts"] == orders[0]["candle_ts"]].count("partial_fill") == 1
    assert_balances_match(live, first)
    second = live.run(start_ms=live.fake.clock.now_ms())  # restart: balances agree, the session goes on
    assert_balances_match(live, second)


def test_a_session_stopped_right_after_a_fill_resumes_with_it(live, tmp_path, monkeypatch, model, rows):
    # A candle's mark is written before its order: stopped after the fill and before the next mark,
    # the session must take the fill from the journal, or the balances it reconciles disagree.
    live.run()
    first_order = live.journal_rows()[0][0]
    k = next(k for k in range(len(rows)) if ts_of(rows, k) == first_order["candle_ts"])
    (tmp_path / "stopped").mkdir()
    stopped = LiveRun(tmp_path / "stopped", monkeypatch, model, rows)
    first = stopped.run(end_k=k)
    with Journal(stopped.journal) as journal:
        assert journal.last_mark()["units"] == 0.0 and len(journal.fills()) == 1  # filled after the last mark
    assert first["units"] > 0
    second = stopped.run(start_ms=stopped.fake.clock.now_ms())
    restart = [e for e in stopped.journal_rows()[2] if e["kind"] == "restart"]
    assert len(restart) == 1 and f"{first['units']:.8g} units" in restart[0]["detail"]
    assert_balances_match(stopped, second)


def test_dust_left_by_fees_in_the_base_currency_counts_as_flat(live, rows):
    # Fees taken in BTC leave holdings off the amount step; selling what the step allows leaves dust
    # the exchange will not take. Counted as a position, it would stop every later buy.
    live.fake.fee_in_base = True
    summary = live.run()
    orders, fills, events = live.journal_rows()
    sides = [o["side"] for o in orders]
    assert sides.count("buy") >= 3 and sides == ["buy", "sell"] * (len(sides) // 2) + ["buy"] * (len(sides) % 2)
    assert all(o["status"] == "filled" for o in orders)
    assert not [e for e in events if e["kind"] in ("order_skipped", "rejected")]
    dust = [fill["units"] - sold["units"] for fill, sold in zip(fills[::2], fills[1::2], strict=False)]
    assert any(0 < d < FakeMarket.AMOUNT_STEP for d in dust)  # the run really left dust behind
    assert_balances_match(live, summary)
    (live.journal.parent / "quote").mkdir()
    with_quote_fees = LiveRun(live.journal.parent / "quote", live.monkeypatch, live.model, rows)
    with_quote_fees.run()
    assert [o["side"] for o in with_quote_fees.journal_rows()[0]] == sides  # the same decisions


def test_min_sell_units_reads_the_markets_step_minimum_amount_and_minimum_value():
    market = {"precision": {"amount": 1e-5}, "limits": {"amount": {"min": 1e-4}, "cost": {"min": 10.0}}}
    assert min_sell_units(market, ccxt.TICK_SIZE, price=50_000.0) == pytest.approx(2e-4)  # 10 USDT / 50,000
    assert min_sell_units(market, ccxt.TICK_SIZE, price=200_000.0) == pytest.approx(1e-4)  # the minimum amount
    decimals = {"precision": {"amount": 3}, "limits": {}}
    assert min_sell_units(decimals, ccxt.DECIMAL_PLACES, price=1.0) == pytest.approx(1e-3)
    assert min_sell_units({}, ccxt.TICK_SIZE, price=1.0) == 0.0


def test_restart_stops_with_a_clear_line_when_the_exchange_disagrees(live):
    live.run(end_k=60)
    live.fake.balances["BTC"] += 0.25  # someone traded outside the session
    with pytest.raises(ExchangeError, match=r"exchange balances disagree with the journal: BTC is .* but the journal "
                                            r"expects .*source of truth"):
        live.run(start_ms=live.fake.clock.now_ms())


@pytest.mark.parametrize("placed", [True, False])
def test_an_order_cut_off_by_a_crash_is_looked_up_on_restart(live, placed):
    original = live.fake.create_order

    def crash(*args, **kwargs):
        if placed:
            original(*args, **kwargs)
        raise KeyboardInterrupt  # the process dies with the order journaled as new

    live.fake.create_order = crash
    with pytest.raises(KeyboardInterrupt):
        live.run()
    orders, _, _ = live.journal_rows()
    assert [o["status"] for o in orders] == ["new"]
    live.fake.create_order = original
    summary = live.run(start_ms=live.fake.clock.now_ms() + 10 * 60_000)
    orders, fills, events = live.journal_rows()
    first = orders[0]
    if placed:
        assert first["status"] == "filled" and fills[0]["client_id"] == first["client_id"]
    else:
        assert first["status"] == "not_placed" and all(f["client_id"] != first["client_id"] for f in fills)
        assert [e for e in events if e["kind"] == "not_placed"]
    assert [o["clientOrderId"] for o in live.fake.orders].count(first["client_id"]) == int(placed)
    assert_balances_match(live, summary)


@pytest.mark.parametrize("polls", [3, 100])
def test_an_order_left_open_is_awaited_then_cancelled_and_recorded_as_filled(live, polls):
    live.fake.stay_open = [polls]
    live.fake.partial = [0.4]
    summary = live.run()
    orders, fills, events = live.journal_rows()
    first = orders[0]
    assert first["status"] == "partial" and fills[0]["units"] == pytest.approx(0.4 * first["amount"])
    assert live.fake.cancelled == ([] if polls == 3 else [live.fake.orders[0]["id"]])  # waited 10 s at most
    assert_balances_match(live, summary)
