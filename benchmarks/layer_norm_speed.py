"""What the layer_norm key costs: learning steps and greedy acting with and without it, side by side.

Run: ./run bench layer_norm_speed [--rounds 15] [--threads 1]
Both agents (the same model size, batch and replay contents) alternate round by round in one process,
so a busy moment hits both; the medians of the rounds and their ratio are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.agent.dqn import AdaptiveDQNAgent  # noqa: E402
from nexlify.config import MODEL_SIZES, TrainingConfig  # noqa: E402

STATE_SIZE = 40  # about the basic feature set's width with the account features


def filled_agent(layer_norm: bool, model_size: str, batch: int) -> AdaptiveDQNAgent:
    config = TrainingConfig(model_size=model_size, batch_size=batch, learning_starts=0, buffer_size=20_000,
                            seed=1, layer_norm=layer_norm)
    agent = AdaptiveDQNAgent(STATE_SIZE, 3, config)
    rng = np.random.default_rng(0)
    n = 5_000
    agent.remember_batch(rng.standard_normal((n, STATE_SIZE)).astype(np.float32), rng.integers(3, size=n),
                         rng.standard_normal(n).astype(np.float32),
                         rng.standard_normal((n, STATE_SIZE)).astype(np.float32), rng.random(n) < 0.01)
    return agent


def per_call(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the walk-forward's jobs use 1)")
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="large")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--act-states", type=int, default=32, help="states per greedy act() call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}; torch threads {args.threads}\n")
    agents = {flag: filled_agent(flag, args.model_size, args.batch) for flag in (False, True)}
    states = np.random.default_rng(1).standard_normal((args.act_states, STATE_SIZE)).astype(np.float32)
    learn = {flag: [] for flag in agents}
    act = {flag: [] for flag in agents}
    for _ in range(args.rounds):
        for flag, agent in agents.items():
            learn[flag].append(per_call(agent.learn, 50) * 1e3)
            act[flag].append(per_call(lambda agent=agent: agent.act(states, explore=False), 500) * 1e6)
    rows = [[str(flag).lower(), f"{np.median(learn[flag]):.2f}", f"{np.median(act[flag]):.0f}"] for flag in agents]
    print(f"{args.model_size} model, batch {args.batch}; medians of {args.rounds} alternating rounds "
          f"(50 learning steps, 500 greedy calls of {args.act_states} states each)")
    print(table(["layer_norm", "learn ms/step", "act us/call"], rows))
    print(f"\nwith / without: learning {np.median(learn[True]) / np.median(learn[False]):.2f}x, "
          f"acting {np.median(act[True]) / np.median(act[False]):.2f}x")


if __name__ == "__main__":
    main()
