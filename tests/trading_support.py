"""Builders for the trading tests: small saved models with known rules, their market data, and a live
session against the fake exchange."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from fake_exchange import HOUR, FakeMarket, register
from helpers import synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.data.exchange import frame_to_rows, save_ohlcv
from nexlify.data.features import WARMUP_BARS, FeatureScaler, compute_market_features
from nexlify.trading.feeds import ReplayClock
from nexlify.trading.journal import Journal
from nexlify.trading.runner import TradeOptions, run_trade

ROWS = 200
KEY, SECRET = "AKfake0123456789KEYSTRING", "sEcReT9876543210SECRETSTRING"  # set them in the environment
MAX_POSITION = 5_000.0


def market_frame(rows: int = ROWS, seed: int = 3):
    return synthetic_frame(rows, seed=seed)


def rule_model(path: Path, frame, threshold: float = 0.5) -> Path:
    """A tiny saved agent whose network encodes a rule that trades often and reads every part of the state.

    Buy when the 48-candle z-score is above ``threshold``, sell below -``threshold`` or when the open
    position has gained more than 2%, hold in a drawdown deeper than 3%: market features and all
    account features matter. Models of one ``frame`` share its scaler (an ensemble's members do).
    """
    agent = AdaptiveDQNAgent(12, 3, tiny_config())
    with _wired(agent) as (first, second, head):
        first.weight[2, 10], first.bias[2] = 1.0, -0.02  # relu(unrealised - 2%)
        first.weight[3, 11], first.bias[3] = -1.0, -0.03  # relu(-drawdown - 3%)
        for unit in range(4):
            second.weight[unit, unit] = 1.0
        head.weight[1, 0], head.weight[1, 1], head.bias[1] = 1.0, -1.0, -threshold  # buy
        head.weight[2, 1], head.weight[2, 0], head.bias[2] = 1.0, -1.0, -threshold  # sell
        head.weight[2, 2] = 50.0
        head.weight[0, 3] = 20.0  # hold
    return _save_with_scaler(agent, path, frame)


def half_rule_model(path: Path, frame, threshold: float = 0.5) -> Path:
    """A tiny saved ``target_half`` agent (actions 0 flat, 1 half, 2 long) whose network encodes a rule
    that steps through all three levels and reads every account feature, the level included.

    Long when the 48-candle z-score is above ``threshold``, flat below -``threshold``, half between;
    the level held pulls towards half (a state showing 1 where the account is half decides
    otherwise), a gain above 2% takes the position flat and a drawdown deeper than 3% favours half.
    """
    agent = AdaptiveDQNAgent(12, 3, tiny_config(action_mode="target_half"))
    with _wired(agent) as (first, second, head):
        first.weight[2, 9] = 1.0  # relu(level)
        first.weight[3, 10], first.bias[3] = 1.0, -0.02  # relu(unrealised - 2%)
        first.weight[4, 11], first.bias[4] = -1.0, -0.03  # relu(-drawdown - 3%)
        for unit in range(5):
            second.weight[unit, unit] = 1.0
        head.weight[2, 0], head.bias[2] = 1.0, -threshold  # long
        head.weight[0, 1], head.bias[0] = 1.0, -threshold  # flat
        head.weight[0, 3] = 50.0
        head.weight[1, 2], head.weight[1, 4] = 0.4, 20.0  # half
    return _save_with_scaler(agent, path, frame)


@contextmanager
def _wired(agent):
    """The zeroed layers of ``agent``'s tiny network, (first, second, head), for a rule to be wired in;
    the first two hidden units already read the 48-candle z-score: relu(z), relu(-z)."""
    net = agent.q_network
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        first = net.body[0]
        first.weight[0, 7], first.weight[1, 7] = 1.0, -1.0
        yield first, net.body[2], net.head


def _save_with_scaler(agent, path: Path, frame) -> Path:
    """Save ``agent`` with the feature scaler of ``frame`` (models of one frame share it)."""
    scaler = FeatureScaler().fit(compute_market_features(frame)[WARMUP_BARS:])
    agent.save(path, extra_metadata={"scaler": scaler.to_dict()})
    return path


def write_feed(path: Path, frame) -> Path:
    save_ohlcv(frame, path)
    return path


def rows_of(frame) -> list[list[float]]:
    return frame_to_rows(frame)


def ts_of(rows, k: int) -> int:
    """Open time of the k-th candle after the warm-up (the first one a session trades)."""
    return int(rows[WARMUP_BARS + k][0])


class LiveRun:
    """A live session (sandbox, --max-position MAX_POSITION, balance 10,000) on a FakeMarket holding
    20,000 USDT, resumable: ``run(end_k)`` stops after candle ``end_k``, ``run(start_ms=...)`` goes on."""

    def __init__(self, tmp_path, monkeypatch, model, rows) -> None:
        self.monkeypatch, self.model, self.rows = monkeypatch, model, rows
        self.journal = tmp_path / "live.sqlite"
        self.lines: list[str] = []
        self.fake = FakeMarket(rows, ReplayClock(ts_of(rows, 0)), balances={"USDT": 20_000.0, "BTC": 0.0})

    def run(self, end_k: int | None = None, start_ms: int | None = None) -> dict:
        end = ts_of(self.rows, end_k) + HOUR + HOUR // 2 if end_k is not None else int(self.rows[-1][0]) + 2 * HOUR
        now = start_ms if start_ms is not None else self.fake.clock.now_ms()
        self.fake.clock = ReplayClock(now, end_ms=end)
        register(self.monkeypatch, self.fake)
        options = TradeOptions(model=self.model, exchange="fakex", journal=self.journal, live=True,
                               confirm_live=True, sandbox=True, max_position=MAX_POSITION, balance=10_000.0)
        return run_trade(options, out=self.lines.append, clock=self.fake.clock)

    def journal_rows(self):
        with Journal(self.journal) as journal:
            return journal.orders(), journal.fills(), journal.events()


def assert_balances_match(live: LiveRun, summary: dict) -> None:
    """The exchange holds exactly what the journal says the session bought and sold."""
    assert live.fake.balances["BTC"] == pytest.approx(summary["units"], abs=1e-12)
    assert live.fake.balances["USDT"] == pytest.approx(20_000.0 - 10_000.0 + summary["cash"], abs=1e-9)
