"""Builders for the trading tests: a small saved model with a known rule, and its market data."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers import synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.data.exchange import frame_to_rows, save_ohlcv
from nexlify.data.features import WARMUP_BARS, FeatureScaler, compute_market_features

ROWS = 200


def market_frame(rows: int = ROWS, seed: int = 3):
    return synthetic_frame(rows, seed=seed)


def rule_model(path: Path, frame, threshold: float = 0.5) -> Path:
    """A tiny saved agent whose network encodes a rule that trades often and reads every part of the state.

    Buy when the 48-candle z-score is above ``threshold``, sell below -``threshold`` or when the open
    position has gained more than 2%, hold in a drawdown deeper than 3%: market features and all
    account features matter. Models of one ``frame`` share its scaler (an ensemble's members do).
    """
    agent = AdaptiveDQNAgent(12, 3, tiny_config())
    net = agent.q_network
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        first, second, head = net.body[0], net.body[2], net.head
        first.weight[0, 7], first.weight[1, 7] = 1.0, -1.0  # relu(z), relu(-z)
        first.weight[2, 10], first.bias[2] = 1.0, -0.02  # relu(unrealised - 2%)
        first.weight[3, 11], first.bias[3] = -1.0, -0.03  # relu(-drawdown - 3%)
        for unit in range(4):
            second.weight[unit, unit] = 1.0
        head.weight[1, 0], head.weight[1, 1], head.bias[1] = 1.0, -1.0, -threshold  # buy
        head.weight[2, 1], head.weight[2, 0], head.bias[2] = 1.0, -1.0, -threshold  # sell
        head.weight[2, 2] = 50.0
        head.weight[0, 3] = 20.0  # hold
    scaler = FeatureScaler().fit(compute_market_features(frame)[WARMUP_BARS:])
    agent.save(path, extra_metadata={"scaler": scaler.to_dict()})
    return path


def write_feed(path: Path, frame) -> Path:
    save_ohlcv(frame, path)
    return path


def rows_of(frame) -> list[list[float]]:
    return frame_to_rows(frame)
