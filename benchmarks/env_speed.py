"""Environment speed: our single env against gym-anytrading's stocks env, N accounts at N=1..1024, and
one account's backtest bar on the python and numpy backends.

Run: ./run bench env_speed      (gym-anytrading is optional: pip install gym-anytrading)
Prints medians of several repeats, side by side, on the bundled BTC/USDT data (180 days).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median_time, table  # noqa: E402

from nexlify.agent.dqn import AdaptiveDQNAgent  # noqa: E402
from nexlify.config import TrainingConfig  # noqa: E402
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES  # noqa: E402
from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.env.accounts import Accounts  # noqa: E402
from nexlify.env.actions import N_ACTIONS  # noqa: E402
from nexlify.env.trading import TradingEnvironment  # noqa: E402
from nexlify.evaluation.backtest import agent_policy, run_policy  # noqa: E402

STEPS = 2_000


def single_env_steps_per_sec(env, actions: np.ndarray) -> float:
    def run() -> None:
        env.reset(seed=0)
        for a in actions:
            _, _, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()

    return len(actions) / median_time(run)


def anytrading_env(splits):
    try:
        import gym_anytrading  # noqa: F401
        from gym_anytrading.envs import StocksEnv
    except ImportError:
        return None
    frame = splits.train.to_frame().rename(columns=str.capitalize)
    return StocksEnv(df=frame, window_size=24, frame_bound=(24, len(frame)))


def backtest_us_per_bar(market, policy, backend: str) -> float:
    """``run_policy`` for one account on ``backend``, microseconds per bar."""
    return median_time(lambda: run_policy(market, policy, backend, 8760.0, backend=backend)) / (len(market) - 1) * 1e6


def main() -> None:
    splits = prepare_market(None, data_days=180)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, N_ACTIONS, STEPS)
    ours = single_env_steps_per_sec(TradingEnvironment(splits.train), actions)
    rows = [["nexlify TradingEnvironment", f"{ours:,.0f}", "1.00"]]
    other = anytrading_env(splits)
    if other is not None:
        theirs = single_env_steps_per_sec(other, actions % 2)  # its actions are 0 sell / 1 buy
        rows.append(["gym-anytrading StocksEnv", f"{theirs:,.0f}", f"{theirs / ours:.2f}"])
        rows.append(["speed-up (ours / theirs)", f"{ours / theirs:.1f}x", ""])
    else:
        rows.append(["gym-anytrading StocksEnv", "not installed", ""])
    print(f"Machine: {machine()}")
    print(f"Single environment, {STEPS} random steps, median of 5\n")
    print(table(["environment", "steps/s", "relative"], rows))

    vector_rows = []
    for n in (1, 64, 1024):
        env = Accounts(splits.train, n)  # the numpy accounts the trainer steps
        batch = rng.integers(0, N_ACTIONS, size=(200, n))

        def run(env=env, batch=batch) -> None:
            env.reset()
            for row in batch:
                env.step(row)

        seconds = median_time(run)
        vector_rows.append([n, f"{200 * n / seconds:,.0f}", f"{seconds / 200 * 1e6:.1f}"])
    print("\nAccounts (numpy, what the trainer steps; same-step autoreset), 200 steps, median of 5\n")
    print(table(["N envs", "transitions/s", "us per step"], vector_rows))

    # An agent's backtest (every validation and test) is one account stepped bar by bar, on the python
    # backend by default. Both backends with the same greedy policy (a large network).
    import torch

    torch.set_num_threads(1)
    agent = AdaptiveDQNAgent(splits.validation.features.shape[1] + len(ACCOUNT_FEATURE_NAMES), N_ACTIONS,
                             TrainingConfig().with_overrides({"model_size": "large", "device": "cpu"}))
    policy = agent_policy(agent)
    per_bar = {backend: backtest_us_per_bar(splits.validation, policy, backend) for backend in ("numpy", "python")}
    print(f"\nOne account's backtest (large network's greedy policy, {len(splits.validation) - 1} validation bars, "
          "1 torch thread), median of 5\n")
    print(table(["backend", "us per bar", "relative"],
                [[b, f"{us:.1f}", f"{us / per_bar['python']:.2f}"] for b, us in per_bar.items()]))


if __name__ == "__main__":
    main()
