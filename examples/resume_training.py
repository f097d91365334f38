#!/usr/bin/env python3
"""Checkpoints and resuming: train with a save interval, pick the run up from a checkpoint_ep{N}.pth,
check it ends exactly where the uninterrupted run ended, then extend a finished run with more episodes.

    python examples/resume_training.py                     # 20 episodes, a checkpoint every 10
    python examples/resume_training.py --quick             # a few seconds, tiny settings

The command-line equivalents are ``nexlify train --resume PATH`` (or ``--resume`` alone for the
newest checkpoint in ``--checkpoint-dir``); Ctrl-C during training writes
``checkpoint_interrupted.pth``, which resumes the same way. Everything is written under ``--out``
(default ``models/examples/resume``): ``first/`` (the run, later extended) and ``resumed/`` (the
resumed copy).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from nexlify.config import TrainingConfig
from nexlify.strategies.nexlify_adaptive_rl_agent import AdaptiveDQNAgent, HardwareProfiler
from nexlify.training.pipeline import run_training

QUICK = {"model_size": "tiny", "batch_size": 32, "buffer_size": 5_000, "learning_starts": 64, "train_frequency": 8,
         "target_update_interval": 20, "parallel_envs": 2, "eval_interval": 2, "data_days": 14, "num_workers": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes of the first run (default 20)")
    parser.add_argument("--save-interval", type=int, default=10, help="episodes between checkpoints (default 10)")
    parser.add_argument("--extra-episodes", type=int, default=10, help="episodes added to the finished run "
                        "(default 10)")
    parser.add_argument("--data-days", type=int, default=180, help="most recent days of the bundled data (default 180)")
    parser.add_argument("--out", default="models/examples/resume", help="output folder")
    parser.add_argument("--quick", action="store_true", help="4 + 2 tiny episodes: finishes in seconds")
    return parser.parse_args()


def same_weights(path_a: Path, path_b: Path) -> bool:
    a, b = AdaptiveDQNAgent.from_checkpoint(path_a), AdaptiveDQNAgent.from_checkpoint(path_b)
    return all(torch.equal(x, y) for x, y in zip(a.q_network.parameters(), b.q_network.parameters(), strict=True))


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    episodes, interval, extra = (4, 2, 2) if args.quick else (args.episodes, args.save_interval, args.extra_episodes)
    if not 1 <= interval <= episodes:
        sys.exit("error: --save-interval must be between 1 and --episodes")
    base = TrainingConfig().with_overrides(QUICK) if args.quick else \
        HardwareProfiler().config.with_overrides({"data_days": args.data_days})
    config = base.with_overrides({"episodes": episodes, "save_interval": interval})
    first, resumed = out / "first", out / "resumed"
    for folder in (first, resumed):  # start clean: outputs of an earlier run would mix with these
        if folder.exists():
            shutil.rmtree(folder)

    print(f"[1/3] first run: {episodes} episodes, checkpoint every {interval}")
    full = run_training(config, output_dir=first, quiet=args.quick)
    checkpoints = sorted(first.glob("checkpoint_ep*.pth"), key=lambda p: int(p.stem.removeprefix("checkpoint_ep")))
    print(f"  wrote {', '.join(p.name for p in checkpoints)}")

    # 2. A run that died right after its first checkpoint: a copy of the first run's folder without the
    #    files written later stands in for it. Resuming there must reproduce the first run exactly.
    shutil.copytree(first, resumed)
    start = resumed / f"checkpoint_ep{interval}.pth"
    for later in [*resumed.glob("checkpoint_ep*.pth"), resumed / "final_model.pth"]:
        if later != start:
            later.unlink()
    print(f"[2/3] resume from {start}")
    print(f"  (CLI: nexlify train --resume {start} --checkpoint-dir {resumed} --episodes {episodes})")
    again = run_training(config, output_dir=resumed, resume_from=start, quiet=args.quick)
    same_rewards = [e["reward"] for e in again["episodes"]] == [e["reward"] for e in full["episodes"]]
    identical = same_rewards and same_weights(first / "final_model.pth", resumed / "final_model.pth")
    print(f"  {again['run']['episodes_done']} episodes done; identical to the uninterrupted run: "
          f"{'yes' if identical else 'no'} (exact on the CPU; GPU kernels may differ in the last bits)")

    # 3. A finished run can be extended: raise the episode budget and resume from its last checkpoint.
    last = first / f"checkpoint_ep{episodes // interval * interval}.pth"
    total = episodes + extra
    print(f"[3/3] extend {first} from {last.name} to {total} episodes")
    more = run_training(config.with_overrides({"episodes": total}), output_dir=first, resume_from=last,
                        quiet=args.quick)
    print(f"  {more['run']['episodes_done']} episodes done; best model from episode {more['run']['best_episode']}")
    print(f"done: outputs in {out}")


if __name__ == "__main__":
    main()
