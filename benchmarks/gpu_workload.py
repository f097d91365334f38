"""The guide workload on a GPU: 1000 episodes over 180 days with the planned config, fp32 vs bf16,
and a forced out-of-memory recovery run. Everything (environments, replay, network) stays on the device.

Run on an NVIDIA machine:  ./run bench gpu_workload
Smoke test anywhere:        python benchmarks/gpu_workload.py --quick --device cpu
Prints the card, the profiler's time and plan, wall time, transitions/s, gradient samples/s, peak GPU
memory, and validation/test metrics for each precision, then the OOM run's adaptation events.
Target: <= 30 s on one H100/H200. ``--json PATH`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.hardware.projection import projected_train_seconds  # noqa: E402
from nexlify.training.pipeline import backtest_with_baselines  # noqa: E402
from nexlify.training.trainer import Trainer, evaluate_agent  # noqa: E402


def on_cuda(config) -> bool:
    return config.device.startswith("cuda")


def run(config, splits, label: str) -> dict:
    if on_cuda(config):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, splits, folder)
        started = time.perf_counter()
        trainer.train()
        if on_cuda(config):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    agent = trainer.agent
    validation = evaluate_agent(agent, splits.validation, splits.periods_per_year, config).metrics
    test = backtest_with_baselines(agent, splits.test, splits.periods_per_year, config)
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_cuda(config) else float("nan")
    samples = agent.updates * agent.config.effective_batch_size
    result = {"label": label, "seconds": seconds, "transitions": trainer.state.transitions,
              "updates": agent.updates, "samples": samples, "peak_gb": peak,
              "final_batch": agent.config.batch_size, "final_accumulation": agent.config.gradient_accumulation_steps,
              "val_sharpe": validation["sharpe"], "val_return": validation["total_return"],
              "best_val_sharpe": trainer.state.best_score, "validations": len(trainer.state.validation),
              "best_episode": trainer.state.best_episode,
              "test_sharpe": test["agent"].metrics["sharpe"], "test_return": test["agent"].metrics["total_return"],
              "hold_return": test["buy_and_hold"].metrics["total_return"], "events": trainer.state.events}
    print(f"  {label}: {seconds:.1f} s, {result['transitions'] / seconds:,.0f} transitions/s, "
          f"{samples / seconds:,.0f} gradient samples/s, {result['validations']} validations "
          f"(best at episode {result['best_episode']})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--data-days", type=int, default=180)
    parser.add_argument("--device", default=None, help="default: the planned device")
    parser.add_argument("--quick", action="store_true", help="a few episodes, for a smoke test")
    parser.add_argument("--oom-batch", type=int, default=1 << 26, help="absurd batch size for the OOM run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    episodes = 4 if args.quick else args.episodes

    started = time.perf_counter()
    profiler = HardwareProfiler(use_cache=False)
    profile_seconds = time.perf_counter() - started
    # Checkpoint and validation cadence as `nexlify train` has them (validation every 10 episodes' worth).
    overrides = {"episodes": episodes, "data_days": args.data_days}
    if args.device:
        overrides["device"] = args.device
    if args.quick:
        overrides.update(parallel_envs=2, learning_starts=256, buffer_size=20_000, env_backend="torch")
    planned = profiler.config.with_overrides(overrides)
    print(f"Machine: {machine()}")
    print(f"Profiler (cold, measurements included): {profile_seconds:.2f} s")
    measured = profiler.hardware.benchmarks
    for r in measured.rates:
        print(f"  measured {r.device} {r.model_size} batch {r.batch_size}, {r.parallel_envs} envs, {r.threads} "
              f"threads: {r.transitions_per_s:,.0f} transitions/s in the real loop")
    print("Plan:\n  " + "\n  ".join(profiler.explain()))
    splits = prepare_market(None, data_days=args.data_days)
    steps = len(splits.train) - 1
    print(f"\n{episodes} episodes x {steps} steps, {planned.parallel_envs} parallel envs, model "
          f"{planned.model_size}, batch {planned.batch_size} x {planned.gradient_accumulation_steps}, train every "
          f"{planned.train_frequency} transitions (replay ratio {planned.replay_ratio:g}), env backend "
          f"{planned.env_backend}", flush=True)

    variants = {"fp32": planned.with_overrides({"precision": "fp32", "use_mixed_precision": False})}
    if on_cuda(planned) and torch.cuda.is_bf16_supported():
        variants["bf16"] = planned.with_overrides({"precision": "bf16", "use_mixed_precision": True})
    results = [run(config, splits, name) for name, config in variants.items()]
    print()
    print(table(["precision", "wall s", "transitions/s", "grad samples/s", "updates", "peak GPU GiB",
                 "val Sharpe", "best val Sharpe", "test Sharpe", "test return", "buy&hold return"],
                [[r["label"], f"{r['seconds']:.1f}", f"{r['transitions'] / r['seconds']:,.0f}",
                  f"{r['samples'] / r['seconds']:,.0f}", f"{r['updates']:,}", f"{r['peak_gb']:.2f}",
                  f"{r['val_sharpe']:.2f}", f"{r['best_val_sharpe'] or float('nan'):.2f}",
                  f"{r['test_sharpe']:.2f}", f"{r['test_return']:+.1%}", f"{r['hold_return']:+.1%}"]
                 for r in results]))
    projected = projected_train_seconds(measured, planned, steps, len(splits.validation) - 1)
    if projected is not None:
        print(f"Profiler's projection for this run (projected_train_seconds): {projected:.1f} s")

    report = {"machine": machine(), "profile_seconds": profile_seconds, "plan": profiler.explain(),
              "measurements": measured.to_dict(), "projected_train_seconds": projected,
              "episodes": episodes, "steps": steps, "results": results}
    if on_cuda(planned) and not args.quick:
        envs = min(planned.parallel_envs, 64)
        transitions = envs * steps
        # A handful of learning steps is enough to show the recovery; each one is huge.
        oom = planned.with_overrides({"episodes": envs, "batch_size": args.oom_batch,
                                      "gradient_accumulation_steps": 1, "train_frequency": transitions // 2,
                                      "learning_starts": 1_000, "save_interval": envs, "eval_interval": envs,
                                      "parallel_envs": envs})
        print(f"\nOOM recovery run: batch {args.oom_batch:,}, {envs} episodes", flush=True)
        result = run(oom, splits, "oom")
        for event in result["events"]:
            print(f"  {event['message']}")
        print(f"  finished: batch {result['final_batch']:,} x {result['final_accumulation']} accumulation, "
              f"{result['updates']} updates")
        report["oom"] = result
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
