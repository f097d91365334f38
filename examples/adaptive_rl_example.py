#!/usr/bin/env python3
"""A tour of the Python API: profile the machine, build agents, train, monitor, save and load,
backtest against the baselines, and turn fresh candles into a trading decision.

    python examples/adaptive_rl_example.py                  # 100 episodes on the last 180 days
    python examples/adaptive_rl_example.py --episodes 1000  # the guide's full workload
    python examples/adaptive_rl_example.py --quick          # a few seconds: every step, tiny sizes

Run it after ``./run setup`` (or ``pip install -e .``). Everything it writes goes under ``--out``
(default ``models/examples/adaptive_rl``): the training outputs in ``run/``, plus
``hardware_profile.json``, ``best_model_copy.pth`` and ``example_summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nexlify.core.arasaka_neural_net import ArasakaNeuralNetwork, build_state
from nexlify.data.features import LIVE_HISTORY_BARS
from nexlify.data.market import load_ohlcv, prepare_market
from nexlify.errors import ConfigError
from nexlify.evaluation.report import metrics_table
from nexlify.live import LiveTrader
from nexlify.strategies.nexlify_adaptive_rl_agent import AdaptiveDQNAgent, HardwareProfiler, create_optimized_agent
from nexlify.training.pipeline import backtest_with_baselines, run_training

# Settings that make a run finish in seconds on any machine: a smoke test, not a trading model.
QUICK_OVERRIDES = {
    "model_size": "tiny", "batch_size": 32, "gradient_accumulation_steps": 1, "buffer_size": 5_000,
    "learning_starts": 64, "train_frequency": 8, "target_update_interval": 20, "parallel_envs": 2,
    "episodes": 2, "eval_interval": 2, "save_interval": 2, "data_days": 14, "device": "cpu",
    "use_mixed_precision": False, "num_workers": 1,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="training episodes (default 100; the guide "
                        "suggests 100 first, then 1000)")
    parser.add_argument("--data-days", type=int, default=180, help="most recent days of the bundled data (default 180)")
    parser.add_argument("--out", default="models/examples/adaptive_rl", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny settings that finish in seconds")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Profile: detection is always fresh; the ~2 s benchmark is cached per hardware fingerprint.
    print("[1/7] hardware profile")
    profiler = HardwareProfiler(output_dir=out, benchmark_budget_s=0.5 if args.quick else 2.0)
    cpu, ram, gpu = profiler.profile["cpu"], profiler.profile["ram"], profiler.profile["gpu"]
    print(f"  CPU {cpu['brand']}: {cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores")
    print(f"  RAM {ram['total_gb']} GB total, {ram['available_gb']} GB available")
    print(f"  GPU {gpu.get('name') or 'none'}")
    for line in profiler.explain():  # one line per planned key, with its reason
        print(f"  plan: {line}")
    print(f"  saved {profiler.save(out / 'hardware_profile.json')}")

    # 2. Agents: the plan as it is, then with overrides (validated; unknown keys are refused).
    print("[2/7] agents")
    auto = create_optimized_agent(state_size=12, action_size=3, auto_detect=True)
    stats = auto.get_performance_stats()
    print(f"  automatic: {stats['model_size']} ({stats['parameters']:,} parameters), batch {stats['batch_size']} "
          f"x {stats['gradient_accumulation_steps']}, device {stats['device']}")
    manual = create_optimized_agent(state_size=12, action_size=3, config_override={
        "model_size": "large", "batch_size": 256, "use_mixed_precision": True})
    print(f"  override:  {manual.config.model_size} ({manual.get_performance_stats()['parameters']:,} parameters), "
          f"batch {manual.config.batch_size}, precision {manual.config.precision}")
    try:
        create_optimized_agent(state_size=12, action_size=3, config_override={"batch_szie": 64})
    except ConfigError as error:
        print(f"  a misspelt key is refused: {str(error)[:70]}...")
    del auto, manual

    # 3. Train: the plan plus this run's settings, through the same pipeline as `nexlify train`.
    print("[3/7] training")
    overrides = dict(QUICK_OVERRIDES) if args.quick else {"episodes": args.episodes, "data_days": args.data_days}
    config = profiler.config.with_overrides(overrides)
    run_dir = out / "run"
    results = run_training(config, data=None, output_dir=run_dir, profile=profiler.profile,
                           reasons=profiler.explain(), overrides=overrides, quiet=args.quick)
    run = results["run"]
    print(f"  {run['episodes_done']} episodes, {run['transitions']:,} transitions in {run['train_seconds']:.1f} s; "
          f"best episode {run['best_episode']} (validation {config.validation_metric} {run['best_score']:.3f})")
    print(f"  outputs: {', '.join(sorted(p.name for p in run_dir.iterdir()))}")

    # 4. Monitoring: the trainer stores agent.get_performance_stats() after every round.
    print("[4/7] performance stats (last round)")
    perf = results["episodes"][-1]["performance"]
    print(f"  batch time {perf['avg_batch_time_ms']:.2f} ms, memory {perf['avg_memory_usage_gb']:.2f} GB, "
          f"loss {perf['recent_loss']}, buffer {perf['buffer_size']:,}, {perf['samples_per_sec']:,.0f} samples/s")

    # 5. Save and load: a checkpoint rebuilds the model size it was trained with.
    print("[5/7] save and load")
    best_path = run_dir / "best_model.pth"
    best = AdaptiveDQNAgent.from_checkpoint(best_path)
    print(f"  from_checkpoint: {best.config.model_size}, trained {best.checkpoint_metadata['episodes_done']} "
          "episodes")
    agent = create_optimized_agent(state_size=12, action_size=3)  # the guide's form
    agent.load(best_path)
    print(f"  agent.load: the agent is now {agent.config.model_size} (file's size, not the plan's)")
    size = agent.save(out / "best_model_copy.pth", extra_metadata=agent.checkpoint_metadata)
    print(f"  saved best_model_copy.pth ({size:,} bytes)")

    # 6. Backtest the best model on the held-out test split, against the baselines, same costs.
    print("[6/7] backtest on the test split")
    splits = prepare_market(None, data_days=config.data_days)
    tests = backtest_with_baselines(best, splits.test, splits.periods_per_year, best.config)
    print(metrics_table({name: result.metrics for name, result in tests.items()}))

    # 7. Live use: the last LIVE_HISTORY_BARS candles -> the same features and scaler as in training.
    print("[7/7] live decision")
    candles = load_ohlcv(None, log_gaps=False).iloc[-LIVE_HISTORY_BARS:]
    trader = LiveTrader(best)
    state = build_state(candles, trader.scaler)
    flat = trader.decide(candles)
    price = float(candles["close"].iloc[-1])
    long = ArasakaNeuralNetwork.from_model(best_path).decide(
        candles, is_long=True, entry_price=0.98 * price, equity=10_200.0, peak_equity=10_300.0)
    print(f"  state has {state.shape[0]} numbers; at {candles.index[-1]} the model says: "
          f"{flat} (when flat), {long} (when long)")

    summary = {
        "plan": {key: profiler.optimal_config[key] for key in ("device", "model_size", "batch_size", "buffer_size")},
        "episodes_done": run["episodes_done"],
        "best_episode": run["best_episode"],
        "test_sharpe": {name: result.metrics["sharpe"] for name, result in tests.items()},
        "live_decision": {"flat": flat, "long": long},
    }
    (out / "example_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done: outputs in {out}")


if __name__ == "__main__":
    main()
