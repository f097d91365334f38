"""The guide workload on a GPU: 1000 episodes over 180 days with the planned config, fp32 vs bf16,
and a forced out-of-memory recovery run. Everything (environments, replay, network) stays on the device.

Run on an NVIDIA machine:  ./run bench gpu_workload
Smoke test anywhere:        python benchmarks/gpu_workload.py --quick --device cpu
Prints the card, wall time, transitions/s, gradient samples/s, peak GPU memory, and validation/test
metrics for each precision, then the OOM run's adaptation events. Target: <= 30 s on one H100/H200.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.training.pipeline import backtest_with_baselines  # noqa: E402
from nexlify.training.trainer import Trainer, evaluate_agent  # noqa: E402


def run(config, splits, label: str) -> dict:
    if config.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, splits, folder)
        started = time.perf_counter()
        trainer.train()
        if config.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    agent = trainer.agent
    validation = evaluate_agent(agent, splits.validation, splits.periods_per_year, config).metrics
    test = backtest_with_baselines(agent, splits.test, splits.periods_per_year, config)
    peak = torch.cuda.max_memory_allocated() / 2**30 if config.device.startswith("cuda") else float("nan")
    return {"label": label, "seconds": seconds, "transitions": trainer.state.transitions,
            "samples": agent.updates * agent.config.effective_batch_size, "peak_gb": peak,
            "val_sharpe": validation["sharpe"], "test_sharpe": test["agent"].metrics["sharpe"],
            "test_return": test["agent"].metrics["total_return"],
            "hold_return": test["buy_and_hold"].metrics["total_return"], "events": trainer.state.events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--data-days", type=int, default=180)
    parser.add_argument("--device", default=None, help="default: the planned device")
    parser.add_argument("--quick", action="store_true", help="a few episodes, for a smoke test")
    parser.add_argument("--oom-batch", type=int, default=1 << 24, help="absurd batch size for the OOM run")
    args = parser.parse_args()
    episodes = 4 if args.quick else args.episodes
    profiler = HardwareProfiler()
    overrides = {"episodes": episodes, "data_days": args.data_days, "save_interval": max(1, episodes // 2),
                 "eval_interval": max(1, episodes // 4)}
    if args.device:
        overrides["device"] = args.device
    if args.quick:
        overrides.update(parallel_envs=2, learning_starts=256, buffer_size=20_000, env_backend="torch")
    planned = profiler.config.with_overrides(overrides)
    print(f"Machine: {machine()}")
    print("Plan: " + "; ".join(profiler.explain()[:4]))
    splits = prepare_market(None, data_days=args.data_days)
    variants = {"fp32": planned.with_overrides({"precision": "fp32"})}
    if planned.device.startswith("cuda") and torch.cuda.is_bf16_supported():
        variants["bf16"] = planned.with_overrides({"precision": "bf16"})
    results = [run(config, splits, name) for name, config in variants.items()]
    print(f"\n{episodes} episodes x {len(splits.train) - 1} steps, {planned.parallel_envs} parallel envs, "
          f"model {planned.model_size}, batch {planned.batch_size} x {planned.gradient_accumulation_steps}, "
          f"env backend {planned.env_backend}\n")
    print(table(["precision", "wall s", "transitions/s", "grad samples/s", "peak GPU GiB", "val Sharpe",
                 "test Sharpe", "test return", "buy&hold return"],
                [[r["label"], f"{r['seconds']:.1f}", f"{r['transitions'] / r['seconds']:,.0f}",
                  f"{r['samples'] / r['seconds']:,.0f}", f"{r['peak_gb']:.2f}", f"{r['val_sharpe']:.2f}",
                  f"{r['test_sharpe']:.2f}", f"{r['test_return']:+.1%}", f"{r['hold_return']:+.1%}"]
                 for r in results]))
    if planned.device.startswith("cuda"):
        envs = min(planned.parallel_envs, 64)
        transitions = 2 * envs * (len(splits.train) - 1)
        # A handful of learning steps is enough to show the recovery; each one is huge.
        oom = planned.with_overrides({"episodes": 2 * envs, "batch_size": args.oom_batch,
                                      "gradient_accumulation_steps": 1, "train_frequency": transitions // 4,
                                      "learning_starts": 1_000, "save_interval": envs, "eval_interval": envs,
                                      "parallel_envs": envs})
        result = run(oom, splits, "oom")
        print(f"\nOOM recovery run (batch {args.oom_batch:,}): finished in {result['seconds']:.1f} s")
        for event in result["events"]:
            print(f"  {event['message']}")


if __name__ == "__main__":
    main()
