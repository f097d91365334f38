#!/usr/bin/env python3
"""Stable-Baselines3 DQN on Nexlify's TradingEnvironment, judged greedily on the held-out test split.

    python examples/sb3_on_nexlify_env.py                     # 50,000 steps on the last 180 days
    python examples/sb3_on_nexlify_env.py --quick             # a few hundred steps, seconds

``TradingEnvironment`` is a plain Gymnasium env (Box(12) observations, Discrete(3) actions: hold, buy,
sell), so any Gymnasium library can train on it. The test backtest runs SB3's greedy policy through
the same accounting, fees and slippage as Nexlify's own agent and the baselines. Needs
stable-baselines3 (in the ``dev`` extra). Writes ``sb3_dqn.zip`` and ``sb3_results.json`` under ``--out``
(default ``models/examples/sb3``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stable_baselines3 import DQN
from stable_baselines3.common.env_checker import check_env

from nexlify.data.market import prepare_market
from nexlify.evaluation.backtest import run_baselines, run_policy
from nexlify.evaluation.report import metrics_table
from nexlify.strategies.nexlify_rl_agent import TradingEnvironment

FEE, SLIPPAGE, BALANCE = 0.001, 0.0005, 10_000.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=50_000, help="SB3 training steps (default 50,000)")
    parser.add_argument("--data-days", type=int, default=180, help="most recent days of the bundled data (default 180)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="models/examples/sb3", help="output folder")
    parser.add_argument("--quick", action="store_true", help="300 steps on 14 days: finishes in seconds")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timesteps = 300 if args.quick else args.timesteps
    splits = prepare_market(None, data_days=14 if args.quick else args.data_days)

    print("[1/3] environment")
    # A MarketSlice carries features already normalised with the scaler fitted on the train split.
    env = TradingEnvironment(splits.train, initial_balance=BALANCE, fee=FEE, slippage=SLIPPAGE)
    check_env(env)  # SB3's own Gymnasium API check
    print(f"  train split: {len(splits.train):,} candles; observation {env.observation_space}, "
          f"actions {env.action_space}")

    print(f"[2/3] SB3 DQN for {timesteps:,} steps")
    model = DQN(
        "MlpPolicy", env, seed=args.seed, device="cpu", verbose=0,
        policy_kwargs={"net_arch": [128, 64]},  # Nexlify's "small" widths, for a like-for-like network
        learning_starts=min(1_000, timesteps // 3), buffer_size=min(100_000, timesteps),
        train_freq=4, target_update_interval=500, exploration_fraction=0.3, exploration_final_eps=0.05,
    )
    model.learn(total_timesteps=timesteps)
    model.save(out / "sb3_dqn.zip")
    print(f"  saved {out / 'sb3_dqn.zip'}")

    print("[3/3] greedy backtest on the test split (same costs for every policy)")

    def sb3_policy(obs, _step):
        return model.predict(obs, deterministic=True)[0]

    results = {"sb3_dqn": run_policy(splits.test, sb3_policy, "sb3_dqn", splits.periods_per_year,
                                     initial_balance=BALANCE, fee=FEE, slippage=SLIPPAGE)}
    results.update(run_baselines(splits.test, splits.periods_per_year, BALANCE, FEE, SLIPPAGE))
    metrics = {name: result.metrics for name, result in results.items()}
    print(metrics_table(metrics))

    # The same greedy run, as a plain Gymnasium loop on a single environment.
    test_env = TradingEnvironment(splits.test, initial_balance=BALANCE, fee=FEE, slippage=SLIPPAGE)
    obs, info = test_env.reset()
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = test_env.step(int(action))
        done = terminated or truncated
    print(f"  Gymnasium loop final equity {info['equity']:,.2f} "
          f"(backtest: {metrics['sb3_dqn']['final_equity']:,.2f})")

    (out / "sb3_results.json").write_text(json.dumps({"timesteps": timesteps, "test": metrics}, indent=2))
    print(f"done: outputs in {out}")


if __name__ == "__main__":
    main()
