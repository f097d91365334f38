"""The main job end to end: data -> train -> pick best on validation -> test backtest -> outputs."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import MACHINE_SETTINGS, TrainingConfig
from nexlify.data.augment import augment_splits
from nexlify.data.features import FeatureScaler, feature_set_of, warmup_bars
from nexlify.data.market import (
    MIN_SPLIT_ROWS,
    MarketSlice,
    MarketSplits,
    data_origin,
    detect_timeframe,
    load_ohlcv,
    market_slice_from_frame,
    periods_per_year,
    prepare_market,
    prepare_markets,
)
from nexlify.errors import CheckpointError, ConfigError, DataError
from nexlify.evaluation.backtest import BacktestResult, run_baselines, run_policy
from nexlify.evaluation.ensemble import check_members, ensemble_policy
from nexlify.evaluation.report import (
    metrics_table,
    single_window_verdict,
    write_report_png,
    write_results_json,
    write_summary,
)
from nexlify.hardware.measure import time_thread_counts
from nexlify.hardware.measurements import Measurements
from nexlify.hardware.projection import planned_rate, project_run
from nexlify.io import write_text_atomic
from nexlify.serialization import read_checkpoint_meta
from nexlify.training.monitor import TrainingMonitor
from nexlify.training.run_folder import RunFolderLock, check_previous_run, remove_previous_run
from nexlify.training.trainer import BEST_MODEL, Trainer, evaluate_agent

HARDWARE_PROFILE = "hardware_profile.json"
RESULTS = "training_results.json"
SUMMARY = "training_summary.txt"
REPORT = "training_report.png"


def load_training_data(data: Any = None, data_days: int | None = 180, exchange: str | None = None,
                       symbol: str | None = None, timeframe: str | None = None,
                       feature_set: str = "basic", augment: str = "none") -> MarketSplits:
    """The run's splits from a file/frame (None: the bundled candles), several files (one policy
    trained on all those markets, as ``prepare_markets`` pools them) or a fresh exchange download,
    with the features of ``feature_set``; each market's training split augmented per ``augment``
    (``augment_splits``) before markets are joined."""
    if exchange:
        from nexlify.data.exchange import download_ohlcv

        data = download_ohlcv(exchange, symbol or "BTC/USDT", timeframe or "1h", days=data_days or 180)
    if isinstance(data, (list, tuple)):
        return prepare_markets(data, data_days=data_days, feature_set=feature_set,
                               per_market=lambda market: augment_splits(market, augment))
    return augment_splits(prepare_market(data, data_days=data_days, feature_set=feature_set), augment)


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


def backtest_with_baselines(agent: AdaptiveDQNAgent | Sequence[AdaptiveDQNAgent], market: MarketSlice,
                            periods_per_year: float, config: TrainingConfig) -> dict[str, BacktestResult]:
    """The agent's greedy policy (several agents: their mean-Q ensemble) and every baseline on
    ``market``, with the config's costs."""
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    if isinstance(agent, AdaptiveDQNAgent):
        results = {"agent": evaluate_agent(agent, market, periods_per_year, config)}
    else:
        results = {"agent": run_policy(market, ensemble_policy(agent, "mean_q"), "agent", periods_per_year, **costs)}
    results.update(run_baselines(market, periods_per_year, **costs))
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
    splits: MarketSplits | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train per ``config`` on ``splits`` (or ``data``; None: the bundled BTC/USDT candles) and write
    every output into ``output_dir``, which is locked for the run (see ``run_folder``).

    A folder holding another run's outputs is refused unless this run resumes from it or
    ``overwrite`` is set (then those outputs are deleted first).
    """
    output_dir = Path(output_dir)
    console = console or Console(stderr=True)
    started = time.perf_counter()
    if splits is None and resume_from is not None:  # a resume runs on the checkpoint's own data
        splits = recorded_training_splits(read_checkpoint_meta(resume_from), data, f"checkpoint {resume_from}")
    elif splits is None:
        splits = load_training_data(data, config.data_days, feature_set=config.feature_set, augment=config.augment)
    continuing = resume_from is not None and Path(resume_from).resolve().parent == output_dir.resolve()
    with RunFolderLock(output_dir):
        check_previous_run(output_dir, resume=continuing, overwrite=overwrite)
        if overwrite and not continuing:
            removed = remove_previous_run(output_dir)
            if removed:
                console.print(f"--overwrite: removed the previous run's {', '.join(removed)} from {output_dir}",
                              soft_wrap=True)
        return _train_locked(config, splits, output_dir, profile, reasons, overrides, resume_from, tensorboard,
                             console, quiet, started)


def _train_locked(config: TrainingConfig, splits: MarketSplits, output_dir: Path, profile: dict[str, Any] | None,
                  reasons: list[str] | None, overrides: dict[str, Any] | None, resume_from: str | Path | None,
                  tensorboard: bool, console: Console, quiet: bool, started: float) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    source = splits.source
    metadata = {**splits.record(), "data_days": config.data_days}
    tb_dir = str(output_dir / "tensorboard") if tensorboard else None
    with TrainingMonitor(config.episodes, console=console, tensorboard_dir=tb_dir, quiet=quiet) as monitor:
        trainer = Trainer(config, splits, output_dir, monitor=monitor, resume_from=resume_from, metadata=metadata)
        trainer.metadata["data_days"] = trainer.config.data_days  # on resume: the checkpoint's, not the flag's
        measured = Measurements.from_dict((profile or {}).get("benchmarks"))
        rate = planned_rate(measured, trainer.config)
        trainer.expected_transitions_per_s = None if rate is None else rate.transitions_per_s
        trainer.thread_probe = time_thread_counts
        # Written once the trainer exists: on resume the config in force comes from the checkpoint.
        write_hardware_profile(output_dir, profile, trainer.config, reasons or [], overrides or {})
        state = trainer.train()
    best = AdaptiveDQNAgent.from_checkpoint(output_dir / BEST_MODEL, device=trainer.config.device)
    tests = backtest_with_baselines(best, splits.test, splits.periods_per_year, trainer.config)
    projection = project_run(measured, trainer.config, trainer.episode_steps, len(splits.validation) - 1)
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
            "validation_seconds": state.validation_seconds,  # of train_seconds
            "checkpoint_seconds": state.checkpoint_seconds,  # of train_seconds
            # The profiler's projection for this run (None when the run's setting was not measured).
            "projected_train_seconds": None if projection is None else projection.total_s,
            "projection": None if projection is None else projection.to_dict(),  # its parts
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


def recorded_splits(metadata: dict[str, Any], data: Any = None, what: str = "the model") -> MarketSplits:
    """Exactly the splits a model was trained on: rebuilt from its recorded data (or ``data``, a file
    holding the same candles) and window, and checked against its saved feature scaler.

    ConfigError/DataError when that data cannot be found again or has changed inside the window.
    """
    window, scaler = metadata.get("data_window"), metadata.get("scaler")
    if not isinstance(window, list) or len(window) != 2 or not isinstance(scaler, dict):
        raise CheckpointError(f"{what} records no data window or feature scaler; it was not written by "
                              "`nexlify train`")
    origin = metadata.get("data_origin")
    if data is None:
        if origin is None:
            raise ConfigError(f"{what} was trained on several markets, or on downloaded or in-memory candles, "
                              "which cannot be found again; pass --data FILE holding those candles")
        data = None if origin == "bundled" else origin
        if data is not None and not Path(data).is_file():
            raise DataError(f"{what} was trained on {data}, which no longer exists; restore that file or pass "
                            "--data FILE holding the same candles")
    saved = FeatureScaler.from_dict(scaler)
    splits = prepare_market(data, window=window, feature_set=feature_set_of(saved.feature_names))
    same = (splits.window_sha256 == metadata.get("data_sha256") and np.array_equal(saved.mean, splits.scaler.mean)
            and np.array_equal(saved.std, splits.scaler.std))
    if not same:
        raise DataError(f"{splits.source}: the candles from {window[0]} to {window[1]} are not the ones {what} "
                        "was trained on (their sha256 differs from the recorded one). Fix: use the original data")
    return splits


# Keys a resumed run may take from this command: the machine's own settings and the episode target.
RESUME_MAY_CHANGE = (*MACHINE_SETTINGS, "episodes")


def resume_checks(checkpoint: str | Path, overrides: dict[str, Any], data: Any = None,
                  exchange: str | None = None) -> tuple[MarketSplits, int]:
    """Before a resume: the checkpoint is whole and resumable, no flag contradicts the run it
    continues, and its exact data is at hand. Returns (that data's splits, the episode target)."""
    checkpoint = Path(checkpoint)
    meta = read_checkpoint_meta(checkpoint)
    metadata, saved = meta.get("metadata"), meta.get("config")
    trainer_state = metadata.get("trainer_state") if isinstance(metadata, dict) else None
    if not isinstance(trainer_state, dict) or not isinstance(saved, dict):
        raise CheckpointError(f"{checkpoint} holds a model but no training state; resume from a "
                              "checkpoint_ep*.pth or checkpoint_interrupted.pth file")
    what = f"checkpoint {checkpoint}"
    if exchange:
        raise ConfigError(f"--resume continues on the data of {what}; --exchange would download other candles: "
                          "drop --exchange")
    if data is not None and metadata.get("data_origin") is not None and data_origin(data) != metadata["data_origin"]:
        raise ConfigError(f"--data {data} is not the data {what} was trained on ({metadata.get('data_source')}); "
                          "drop --data to continue on that data, or start a new run")
    for key, value in overrides.items():
        if key not in RESUME_MAY_CHANGE and saved.get(key) != value:
            raise ConfigError(f"--resume continues the run as it was set up: {key}={value!r} contradicts its "
                              f"{key}={saved.get(key)!r}; drop that flag or config key, or start a new run")
    done = int(trainer_state.get("episodes_done", 0))
    episodes = int(overrides.get("episodes", saved.get("episodes", 0)))
    if episodes <= done:
        raise ConfigError(f"{what} has {done} episode(s) done already and the target is {episodes}; pass "
                          f"--episodes N with N > {done} to train further")
    return recorded_training_splits(meta, data, what), episodes


def recorded_training_splits(meta: dict[str, Any], data: Any, what: str) -> MarketSplits:
    """What a checkpoint trained on, to continue it: its recorded data (``recorded_splits``) with
    its training split augmented as its config says."""
    metadata, saved = meta.get("metadata"), meta.get("config")
    splits = recorded_splits(metadata if isinstance(metadata, dict) else {}, data, what)
    augment = saved.get("augment", "none") if isinstance(saved, dict) else "none"
    return augment_splits(splits, augment)


MIN_BACKTEST_ROWS = MIN_SPLIT_ROWS  # candles after the warm-up; fewer make no meaningful backtest


def evaluate_model(model_path: str | Path | Sequence[str | Path], data: Any = None,
                   out_dir: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Backtest a saved model (or several, as one mean-Q ensemble) against the baselines.

    Without ``data``: exactly the held-out test split the model was trained with (the recorded
    source, window and test window, checked against the saved scaler), or a refusal. With ``data``:
    the whole of that file or frame after the feature warm-up. Features are normalised with the
    scaler saved in the model, never refitted on the test data. An ensemble's members must share
    that scaler (trained on the same data, e.g. with other seeds); its results go to
    ``evaluation_ensemble`` beside the first model, so the single model's evaluation is kept.
    """
    from nexlify.live import shared_scaler

    paths = [Path(model_path)] if isinstance(model_path, (str, Path)) else [Path(path) for path in model_path]
    agents = [AdaptiveDQNAgent.from_checkpoint(path, device=device) for path in paths]
    for path, member in zip(paths, agents, strict=True):
        if "scaler" not in member.checkpoint_metadata:
            raise CheckpointError(f"{path} has no feature scaler; it was not saved by `nexlify train`")
    check_members(agents)
    agent, scaler = agents[0], shared_scaler(agents)
    model_path = paths[0]
    meta = agent.checkpoint_metadata
    if data is None:
        splits = recorded_splits(meta, what=f"model {model_path}")
        if splits.record()["test_window"] != meta.get("test_window"):
            raise DataError(f"the rebuilt test split of {model_path} is not the recorded one "
                            f"{meta.get('test_window')}; pass --data FILE to choose what to backtest on")
        market, ppy, label = splits.test, splits.periods_per_year, f"test split of {meta.get('data_source')}"
    else:
        frame = load_ohlcv(data, min_rows=warmup_bars(feature_set_of(scaler.feature_names)) + MIN_BACKTEST_ROWS)
        market = market_slice_from_frame(frame, scaler)
        ppy, label = periods_per_year(detect_timeframe(frame)), str(data)
    config = agent.config
    tests = backtest_with_baselines(agent if len(agents) == 1 else agents, market, ppy, config)
    test = {name: r.metrics for name, r in tests.items()}
    verdict = single_window_verdict(test, (len(market) - 1) / ppy * 365)
    results = {"model": str(model_path) if len(paths) == 1 else [str(path) for path in paths],
               "data": label, "rows": len(market), "test": test, "verdict": verdict}
    default_out = "evaluation" if len(paths) == 1 else "evaluation_ensemble"
    out = Path(out_dir) if out_dir is not None else model_path.parent / default_out
    out.mkdir(parents=True, exist_ok=True)
    write_results_json(out / "evaluation_results.json", results)
    write_text_atomic(out / "evaluation_summary.txt",
                      f"Backtest of {' + '.join(map(str, paths))} on {label} ({len(market)} rows)\n\n"
                      + metrics_table(results["test"]) + "\n\n" + verdict + "\n")
    return results
