"""How training time grows with the data window and with the number of episodes.

Run: ./run bench scaling [--episodes 20]
Trains with this machine's plan (in-process, no outputs kept) for --data-days 30, 90, 180, 365 at a
fixed episode count, then for 1x, 2x, 4x the episodes at 180 days. Time per transition should stay
flat: no step grows with the replay size or the history length.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.training.trainer import Trainer  # noqa: E402


def timed_run(config, days: int, episodes: int) -> tuple[int, float]:
    splits = prepare_market(None, data_days=days)
    # Learning from the first batch on, so short runs are not flattered by the warm-up without updates.
    run_config = config.with_overrides({"episodes": episodes, "data_days": days, "save_interval": episodes,
                                        "eval_interval": episodes, "learning_starts": config.effective_batch_size})
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(run_config, splits, folder)
        started = time.perf_counter()
        trainer.train()
        return trainer.state.transitions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    config = HardwareProfiler().config
    print(f"Machine: {machine()}; plan: {config.model_size}, batch {config.batch_size}, "
          f"{config.parallel_envs} envs, train every {config.train_frequency}\n")
    rows = []
    for days, episodes in [(30, args.episodes), (90, args.episodes), (180, args.episodes), (365, args.episodes),
                           (180, 2 * args.episodes), (180, 4 * args.episodes)]:
        transitions, seconds = timed_run(config, days, episodes)
        rows.append([days, episodes, f"{transitions:,}", f"{seconds:.1f}", f"{seconds / transitions * 1e6:.1f}"])
    print(table(["data days", "episodes", "transitions", "wall s", "us / transition"], rows))


if __name__ == "__main__":
    main()
