"""The main job end to end: data -> train -> pick best on validation -> test backtest -> outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.features import FeatureScaler
from nexlify.data.market import (
    MarketSlice,
    detect_timeframe,
    load_ohlcv,
    market_slice_from_frame,
    periods_per_year,
    prepare_market,
)
from nexlify.errors import CheckpointError, ConfigError
from nexlify.evaluation.backtest import BacktestResult, run_baselines
from nexlify.evaluation.report import metrics_table, write_report_png, write_results_json, write_summary
from nexlify.io import write_text_atomic
from nexlify.training.monitor import TrainingMonitor
from nexlify.training.trainer import BEST_MODEL, Trainer, evaluate_agent

HARDWARE_PROFILE = "hardware_profile.json"
RESULTS = "training_results.json"
SUMMARY = "training_summary.txt"
REPORT = "training_report.png"


def data_origin(data: Any) -> str | None:
    """How to find the training data again: 'bundled', an absolute file path, or None (in memory)."""
    if data is None:
        return "bundled"
    if isinstance(data, (str, Path)):
        return str(Path(data).resolve())
    return None


def timeframe_label(seconds: float) -> str:
    """A candle length the way exchanges write it: 1m, 15m, 1h, 4h, 1d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def write_hardware_profile(output_dir: Path, profile: dict[str, Any] | None, config: TrainingConfig,
                           reasons: list[str], overrides: dict[str, Any]) -> None:
    """The detected machine, the plan actually used (after overrides), why, and what was overridden.

    Same layout as ``HardwareProfiler.to_dict()`` plus ``overrides``.
    """
    payload = {"profile": profile, "plan": config.to_dict(), "reasons": reasons, "overrides": overrides}
    write_text_atomic(output_dir / HARDWARE_PROFILE, json.dumps(payload, indent=2, default=str))


def backtest_with_baselines(agent: AdaptiveDQNAgent, market: MarketSlice, periods_per_year: float,
                            config: TrainingConfig) -> dict[str, BacktestResult]:
    """The agent's greedy policy and every baseline on ``market``, with the config's costs."""
    results = {"agent": evaluate_agent(agent, market, periods_per_year, config)}
    results.update(run_baselines(market, periods_per_year, config.initial_balance, config.fee, config.slippage))
    return results


def run_training(
    config: TrainingConfig,
    data: Any = None,
    output_dir: str | Path = "models/adaptive_rl",
    profile: dict[str, Any] | None = None,
    reasons: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    resume_from: str | Path | None = None,
    tensorboard: bool = False,
    console: Console | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train per ``config`` on ``data`` (None: the bundled BTC/USDT candles) and write every output."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    started = time.perf_counter()
    splits = prepare_market(data, data_days=config.data_days)
    torch.manual_seed(config.seed)
    source = splits.source
    metadata = {"data_source": source, "data_origin": data_origin(data), "data_days": config.data_days}
    tb_dir = str(output_dir / "tensorboard") if tensorboard else None
    with TrainingMonitor(config.episodes, console=console, tensorboard_dir=tb_dir, quiet=quiet) as monitor:
        trainer = Trainer(config, splits, output_dir, monitor=monitor, resume_from=resume_from, metadata=metadata)
        # Written once the trainer exists: on resume the config in force comes from the checkpoint.
        write_hardware_profile(output_dir, profile, trainer.config, reasons or [], overrides or {})
        state = trainer.train()
    best = AdaptiveDQNAgent.from_checkpoint(output_dir / BEST_MODEL, device=trainer.config.device)
    tests = backtest_with_baselines(best, splits.test, splits.periods_per_year, trainer.config)
    results = {
        "run": {
            "data_source": source,
            "data_start": str(splits.train.to_frame().index[0]),
            "data_end": str(splits.test.to_frame().index[-1]),
            "timeframe": timeframe_label(splits.timeframe.total_seconds()),
            "gaps": [gap.to_dict() for gap in splits.gaps],
            "rows": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
            "episodes_done": state.episodes_done,
            "transitions": state.transitions,
            "train_seconds": state.train_seconds,
            "total_seconds": time.perf_counter() - started,
            "transitions_per_sec": state.transitions / max(state.train_seconds, 1e-9),
            "best_episode": state.best_episode,
            "best_score": state.best_score,
        },
        "config": trainer.config.to_dict(),
        "episodes": state.episodes,
        "validation": state.validation,
        "events": state.events,
        "test": {name: result.metrics for name, result in tests.items()},
    }
    write_results_json(output_dir / RESULTS, results)
    write_summary(output_dir / SUMMARY, results)
    write_report_png(output_dir / REPORT, results, tests["agent"], tests["buy_and_hold"])
    return results


def evaluate_model(model_path: str | Path, data: Any = None, out_dir: str | Path | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Backtest a saved model against the baselines.

    Without ``data``: the held-out test split of the data the model was trained on (rebuilt from the
    source and window recorded in the model). With ``data``: the whole of that file or frame.
    Features are normalised with the scaler saved in the model, never refitted on the test data.
    """
    agent = AdaptiveDQNAgent.from_checkpoint(model_path, device=device)
    meta = agent.checkpoint_metadata
    if "scaler" not in meta:
        raise CheckpointError(f"{model_path} has no feature scaler; it was not saved by `nexlify train`")
    scaler = FeatureScaler.from_dict(meta["scaler"])
    if data is None:
        origin = meta.get("data_origin")
        if origin is None:
            raise ConfigError(f"{model_path} was trained on downloaded or in-memory candles that cannot be "
                              "found again; pass --data FILE to choose what to backtest on")
        splits = prepare_market(None if origin == "bundled" else origin, data_days=meta.get("data_days"))
        market, ppy, label = splits.test, splits.periods_per_year, f"test split of {meta.get('data_source')}"
    else:
        frame = load_ohlcv(data)
        market = market_slice_from_frame(frame, scaler)
        ppy, label = periods_per_year(detect_timeframe(frame)), str(data)
    config = agent.config
    tests = backtest_with_baselines(agent, market, ppy, config)
    results = {"model": str(model_path), "data": label, "rows": len(market),
               "test": {name: r.metrics for name, r in tests.items()}}
    out = Path(out_dir) if out_dir is not None else Path(model_path).parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_results_json(out / "evaluation_results.json", results)
    write_text_atomic(out / "evaluation_summary.txt",
                      f"Backtest of {model_path} on {label} ({len(market)} rows)\n\n"
                      + metrics_table(results["test"]) + "\n")
    return results
