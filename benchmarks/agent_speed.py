"""Agent speed: learning-step time per model size, and the act-store-learn loop against SB3's DQN.

Run: ./run bench agent_speed [--steps 20000]
1. learn(): median ms per step and gradient samples/s for each model size at batch 64 and 256.
2. The full single-environment loop (act, step, store, learn every 4 transitions, batch 64, network
   [128, 128, 64]) of our agent and of stable-baselines3's DQN on the same TradingEnvironment,
   side by side in one run, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median_time, table  # noqa: E402

from nexlify.agent.dqn import AdaptiveDQNAgent  # noqa: E402
from nexlify.config import MODEL_SIZES, TrainingConfig  # noqa: E402
from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.env.trading import TradingEnvironment  # noqa: E402


def learn_step_table(threads: int) -> list[list[object]]:
    rows = []
    states = np.random.default_rng(0).standard_normal((20_000, 12)).astype(np.float32)
    for size in MODEL_SIZES:
        for batch in (64, 256):
            config = TrainingConfig(model_size=size, batch_size=batch, learning_starts=0, num_workers=threads)
            agent = AdaptiveDQNAgent(12, 3, config)
            agent.remember_batch(states[:-1], np.zeros(len(states) - 1, dtype=np.int64),
                                 np.zeros(len(states) - 1, dtype=np.float32), states[1:],
                                 np.zeros(len(states) - 1, dtype=bool))
            for _ in range(20):
                agent.learn()
            seconds = median_time(lambda agent=agent: [agent.learn() for _ in range(50)], repeats=5) / 50
            rows.append([size, batch, f"{seconds * 1e3:.2f}", f"{batch / seconds:,.0f}"])
    return rows


def our_loop(env: TradingEnvironment, steps: int, threads: int) -> float:
    config = TrainingConfig(model_size="medium", batch_size=64, train_frequency=4, learning_starts=1_000,
                            buffer_size=100_000, num_workers=threads, target_update_interval=2_500)
    agent = AdaptiveDQNAgent(12, 3, config)
    obs, _ = env.reset(seed=0)
    started = time.perf_counter()
    for step in range(steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.remember(obs, action, reward, next_obs, terminated, truncated)
        agent.decay_epsilon()
        if step % 4 == 0:
            agent.learn()
        obs = env.reset()[0] if terminated or truncated else next_obs
    return time.perf_counter() - started


def sb3_loop(env: TradingEnvironment, steps: int) -> float | None:
    try:
        from stable_baselines3 import DQN
    except ImportError:
        return None
    model = DQN("MlpPolicy", env, batch_size=64, train_freq=4, learning_starts=1_000, buffer_size=100_000,
                policy_kwargs={"net_arch": [128, 128, 64]}, seed=0, verbose=0, device="cpu")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="transitions for the loop comparison")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(f"Machine: {machine()}; torch threads {args.threads}\n")
    print("learn(): median over 5 x 50 steps")
    print(table(["model", "batch", "ms/step", "samples/s"], learn_step_table(args.threads)))
    splits = prepare_market(None, data_days=180)
    ours = our_loop(TradingEnvironment(splits.train), args.steps, args.threads)
    torch.set_num_threads(args.threads)
    theirs = sb3_loop(TradingEnvironment(splits.train), args.steps)
    print(f"\nact-store-learn loop, {args.steps:,} transitions, medium [128,128,64], batch 64, train every 4")
    rows = [["nexlify AdaptiveDQNAgent", f"{ours:.1f}", f"{args.steps / ours:,.0f}"]]
    if theirs is not None:
        rows.append(["stable-baselines3 DQN", f"{theirs:.1f}", f"{args.steps / theirs:,.0f}"])
    print(table(["loop", "seconds", "transitions/s"], rows))
    if theirs is not None:
        print(f"\nspeed ratio (ours / SB3): {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
