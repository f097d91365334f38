"""Peak resident memory of a training run: the guide's budget profile and this machine's plan.

Run: ./run bench memory [--episodes 100] [--data-days 180]
Each run is a separate `nexlify train` process whose RSS is sampled every 0.1 s; the replay memory
fills within the first episodes, so a run long enough to fill it shows the plateau (RSS at each
quarter of the run is printed to show there is no growth after that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

BUDGET = {"model_size": "tiny", "batch_size": 16, "gradient_accumulation_steps": 4, "buffer_size": 25_000,
          "train_frequency": 8, "checkpoint_compression": True}


def measure(args: list[str]) -> tuple[float, list[float], float]:
    """(peak RSS in MB, RSS at each quarter, wall seconds) of one training process."""
    started = time.perf_counter()
    process = psutil.Popen([sys.executable, "-m", "nexlify.cli", "train", "--quiet", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[float] = []
    while process.poll() is None:
        try:
            samples.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    if process.returncode != 0:
        raise SystemExit(f"training failed: {process.stderr.read().decode()[-500:]}")
    quarters = [samples[min(len(samples) - 1, int(len(samples) * q))] for q in (0.25, 0.5, 0.75, 0.99)]
    return max(samples), quarters, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--data-days", type=int, default=180)
    args = parser.parse_args()
    print(f"Machine: {machine()}\n{args.episodes} episodes over {args.data_days} days, RSS sampled every 0.1 s\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        budget = Path(folder) / "budget.json"
        budget.write_text(json.dumps(BUDGET))
        runs = {
            "budget (tiny, batch 16x4, buffer 25K)": ["--config", str(budget), "--parallel-envs", "1"],
            "this machine's plan": [],
        }
        for name, extra in runs.items():
            out = Path(folder) / name.split()[0]
            peak, quarters, seconds = measure(["--episodes", str(args.episodes), "--data-days",
                                               str(args.data_days), "--checkpoint-dir", str(out), *extra])
            rows.append([name, f"{peak:,.0f}", " / ".join(f"{q:,.0f}" for q in quarters), f"{seconds:.0f}"])
    print(table(["profile", "peak RSS MB", "RSS at 25/50/75/100% (MB)", "wall s"], rows))


if __name__ == "__main__":
    main()
