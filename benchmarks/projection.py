"""The profiler's projected training time against the real one, for the planned main job.

Run: ./run bench projection [--episodes 100]
Profiles this machine cold, then runs the main job as `nexlify train` does (the plan, the bundled
data, validation and checkpoints) for --episodes episodes, and prints `projected_train_seconds` (the
measured real-loop speed of the planned setting x this run's transitions, plus its validations,
checkpoints and start-up as measured once each by the profiler) next to the actual `train_seconds`
from training_results.json, with the projection's parts. The target is within +-25%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.training.pipeline import run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=None, help="default: the plan's (the full main job)")
    args = parser.parse_args()
    started = time.perf_counter()
    profiler = HardwareProfiler(reprofile=True)
    profile_s = time.perf_counter() - started
    config = profiler.config if args.episodes is None else profiler.config.with_overrides({"episodes": args.episodes})
    print(f"Machine: {machine()}")
    print(f"Profile (cold): {profile_s:.1f} s, measurements {profiler.hardware.benchmarks.duration_s} s")
    print(f"Plan: {config.model_size}, batch {config.batch_size}, {config.parallel_envs} parallel envs, "
          f"{config.num_workers} torch thread(s), {config.episodes} episodes")
    with tempfile.TemporaryDirectory() as folder:
        results = run_training(config, output_dir=folder, profile=profiler.profile, reasons=profiler.explain(),
                               quiet=True)
    run = results["run"]
    projected, actual = run["projected_train_seconds"], run["train_seconds"]
    error = "-" if projected is None else f"{actual / projected - 1:+.0%}"
    print(table(["episodes", "transitions", "projected_train_seconds", "train_seconds (actual)", "actual vs projected",
                 "measured tr/s", "actual tr/s"],
                [[run["episodes_done"], f"{run['transitions']:,}", "-" if projected is None else f"{projected:.1f}",
                  f"{actual:.1f}", error, f"{run['transitions'] / projected:,.0f}" if projected else "-",
                  f"{run['transitions_per_sec']:,.0f}"]]))
    parts = run["projection"]
    if parts is not None:
        print(f"Projection's parts: loop {parts['loop_s']:.1f} s, {parts['validations']} validations "
              f"{parts['validation_s']:.1f} s, {parts['checkpoints']} checkpoints {parts['checkpoint_s']:.1f} s, "
              f"start-up {parts['startup_s']:.2f} s")
    print(f"Actual parts: loop {actual - run['validation_seconds'] - run['checkpoint_seconds']:.1f} s, "
          f"validations {run['validation_seconds']:.1f} s, checkpoints {run['checkpoint_seconds']:.1f} s")
    test = results["test"]
    print("Test split: " + ", ".join(
        f"{name} {m['total_return']:+.1%} (Sharpe {m['sharpe']:+.2f}, {m['trades']:.0f} trades)"
        for name in ("agent", "buy_and_hold", "ma_crossover") if (m := test.get(name))))
    for event in results["events"]:
        print(f"  event: {event['kind']}: {event['message']}")


if __name__ == "__main__":
    main()
