"""Throughput and learning against stable-baselines3's DQN, same data, network and replay ratio.

Run: ./run bench sb3_comparison [--episodes 20] [--data-days 180]
Both learners see the same number of transitions from the training split of the bundled data, use
the network [128, 128, 64] and the same replay ratio (gradient samples per collected transition):
by default the plan's (SB3: its usual batch 64, a learning step every 64 / ratio steps; ours: the
plan's bigger batches over parallel environments). Our side runs what users get: this machine's plan
(batch, learning cadence, parallel envs, torch threads; from a cold profile) with that network.
SB3 runs at its own faster torch thread count, probed first (our agent sets the
process-wide thread count, and on a loaded 2-core machine 2 threads can make SB3 several times
slower: the anchor must not be handicapped). Only training is timed. Printed side by side: wall
time, transitions/s, gradient samples/s, validation Sharpe and final validation equity of the greedy
policy, the speed ratio, and the projection to the guide's 1000-episode workload.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.config import TrainingConfig  # noqa: E402
from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.env.trading import TradingEnvironment  # noqa: E402
from nexlify.evaluation.backtest import buy_and_hold_policy, run_policy  # noqa: E402
from nexlify.hardware.cpu import thread_candidates  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.training.trainer import Trainer, evaluate_agent  # noqa: E402

SB3_BATCH = 64  # SB3's default DQN batch; its train_freq sets the replay ratio


def sb3_train_freq(replay_ratio: int) -> int:
    """SB3's environment steps per learning step at ``replay_ratio`` gradient samples per transition."""
    return max(1, SB3_BATCH // replay_ratio)


def run_sb3(splits, transitions: int, seed: int, threads: int, replay_ratio: int) -> dict[str, float]:
    from stable_baselines3 import DQN

    torch.set_num_threads(threads)
    env = TradingEnvironment(splits.train)
    model = DQN("MlpPolicy", env, batch_size=SB3_BATCH, train_freq=sb3_train_freq(replay_ratio),
                learning_starts=1_000, buffer_size=100_000,
                policy_kwargs={"net_arch": [128, 128, 64]}, seed=seed, verbose=0, device="cpu",
                exploration_fraction=0.3)
    started = time.perf_counter()
    model.learn(total_timesteps=transitions)
    seconds = time.perf_counter() - started
    policy = lambda obs, _t: model.predict(obs, deterministic=True)[0]  # noqa: E731
    metrics = run_policy(splits.validation, policy, "sb3", splits.periods_per_year).metrics
    return {"seconds": seconds, "gradient_samples": model._n_updates * SB3_BATCH, **metrics}


def fastest_sb3_threads(splits, candidates: list[int], replay_ratio: int,
                        seconds: float = 10.0) -> tuple[int, dict[int, float]]:
    """SB3's faster torch thread count on this machine right now: each count trains for ``seconds``
    (past learning_starts on any machine worth benchmarking), transitions/s compared."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAfter(BaseCallback):
        def _on_training_start(self) -> None:
            self.started = time.perf_counter()

        def _on_step(self) -> bool:
            return time.perf_counter() - self.started < seconds

    rates = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        model = DQN("MlpPolicy", TradingEnvironment(splits.train), batch_size=SB3_BATCH,
                    train_freq=sb3_train_freq(replay_ratio), learning_starts=1_000,
                    buffer_size=100_000, policy_kwargs={"net_arch": [128, 128, 64]}, seed=0, verbose=0,
                    device="cpu")
        started = time.perf_counter()
        model.learn(total_timesteps=10**7, callback=StopAfter())
        rates[threads] = model.num_timesteps / (time.perf_counter() - started)
    return max(rates, key=lambda n: rates[n]), rates


def run_ours(splits, episodes: int, parallel_envs: int, batch_size: int, threads: int, seed: int,
             replay_ratio: int) -> dict[str, float]:
    every = max(1, batch_size // replay_ratio)
    # The same task as SB3's: the Gymnasium env's log-return reward, no switching penalty.
    config = TrainingConfig(model_size="medium", trade_penalty=0.0, reward_mode="log_return", batch_size=batch_size,
                            train_frequency=every, parallel_envs=parallel_envs, episodes=episodes,
                            save_interval=episodes, eval_interval=episodes, learning_starts=1_000, buffer_size=100_000,
                            target_update_interval=max(1, 10_000 // every),
                            num_workers=threads, seed=seed, data_days=None)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, splits, folder)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    metrics = evaluate_agent(trainer.agent, splits.validation, splits.periods_per_year, config).metrics
    return {"seconds": seconds, "gradient_samples": trainer.agent.updates * config.effective_batch_size,
            **metrics}


def welch_t(ours: list[float], theirs: list[float]) -> float:
    """Welch's t statistic of mean(ours) - mean(theirs); |t| < ~2 means no detectable difference."""
    if len(ours) < 2 or len(theirs) < 2:
        return float("nan")
    a, b = np.asarray(ours), np.asarray(theirs)
    spread = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return float((a.mean() - b.mean()) / spread) if spread > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--data-days", type=int, default=180)
    parser.add_argument("--parallel-envs", type=int, default=None, help="default: the plan's")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="our batch size(s), default the plan's; each learns every batch/ratio transitions")
    parser.add_argument("--replay-ratio", type=int, default=None,
                        help="gradient samples per transition for both learners (default: the plan's)")
    parser.add_argument("--threads", type=int, default=None, help="our torch threads, default the plan's")
    parser.add_argument("--seeds", type=int, default=1, help="repeat each learner over this many seeds")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()
    profiler = HardwareProfiler(reprofile=True)
    plan = profiler.config
    batches = args.batch_size or [plan.batch_size]
    envs = args.parallel_envs or plan.parallel_envs
    threads = args.threads or plan.num_workers
    ratio = args.replay_ratio or max(1, round(plan.replay_ratio))
    splits = prepare_market(None, data_days=args.data_days)
    transitions = args.episodes * (len(splits.train) - 1)
    print(f"Machine: {machine()}")
    print(f"Ours: the plan's batch {plan.batch_size} every {plan.train_frequency} transitions (replay ratio "
          f"{plan.replay_ratio:g}), {plan.parallel_envs} parallel envs, {plan.num_workers} torch "
          f"thread(s) (planned {plan.model_size}; here the shared network); used: batch {batches}, {envs} envs, "
          f"{threads} thread(s)")
    if not args.skip_sb3:
        sb3_threads, probe = fastest_sb3_threads(splits, thread_candidates(profiler.hardware.cpu.compute_cores),
                                                 ratio)
        print("SB3 thread probe (transitions/s): " + ", ".join(f"{n}: {r:,.0f}" for n, r in probe.items())
              + f" -> SB3 runs at {sb3_threads} thread(s)")
    print(f"Workload: {args.episodes} episodes x {len(splits.train) - 1} steps = {transitions:,} transitions, "
          f"replay ratio {ratio} (SB3: batch {SB3_BATCH} every {sb3_train_freq(ratio)} steps), "
          "network [128, 128, 64]\n")
    runs: dict[str, list[dict[str, float]]] = {f"nexlify b{b}": [] for b in batches}
    if not args.skip_sb3:
        runs["stable-baselines3"] = []
    for seed in range(args.seeds):  # interleaved, so a slow spell of the machine hits every learner
        for batch in batches:
            runs[f"nexlify b{batch}"].append(run_ours(splits, args.episodes, envs, batch, threads, seed, ratio))
        if not args.skip_sb3:
            runs["stable-baselines3"].append(run_sb3(splits, transitions, seed, sb3_threads, ratio))
    results = {name: {key: float(np.median([r[key] for r in rs])) for key in rs[0]} for name, rs in runs.items()}
    sb3 = runs.get("stable-baselines3")
    rows = []
    for name, r in results.items():
        sharpes = [run["sharpe"] for run in runs[name]]
        equities = [run["final_equity"] for run in runs[name]]
        speed = f"{results['stable-baselines3']['seconds'] / r['seconds']:.1f}x" if sb3 else "-"
        vs = "-" if not sb3 or name == "stable-baselines3" else (
            f"{welch_t(sharpes, [x['sharpe'] for x in sb3]):+.2f} / "
            f"{welch_t(equities, [x['final_equity'] for x in sb3]):+.2f}")
        rows.append([name, f"{r['seconds']:.1f}", f"{transitions / r['seconds']:,.0f}",
                     f"{r['gradient_samples'] / r['seconds']:,.0f}", f"{r['gradient_samples'] / transitions:.1f}",
                     f"{np.mean(sharpes):.2f} +- {np.std(sharpes, ddof=1) if len(sharpes) > 1 else 0:.2f}",
                     f"{np.mean(equities):,.0f}", vs, speed, f"{r['seconds'] * 1000 / args.episodes / 60:.1f}"])
    print(f"wall times: medians over {args.seeds} seed(s); validation: mean +- std over seeds; "
          "t: Welch's t of ours against SB3 (Sharpe / equity; |t| < 2: no detectable difference)\n")
    print(table(["learner", "wall s", "transitions/s", "grad samples/s", "replay ratio", "val Sharpe",
                 "val equity", "t vs SB3", "speed vs SB3", "1000 eps (min)"], rows))
    for name, rs in runs.items():
        print(f"  {name} per seed: Sharpe " + ", ".join(f"{x['sharpe']:.2f}" for x in rs)
              + "; equity " + ", ".join(f"{x['final_equity']:,.0f}" for x in rs))
    hold = run_policy(splits.validation, buy_and_hold_policy, "hold", splits.periods_per_year).metrics
    print(f"\nfor reference, buy-and-hold on validation: Sharpe {hold['sharpe']:.2f}, "
          f"equity {hold['final_equity']:,.0f}")


if __name__ == "__main__":
    main()
