"""Walk-forward jobs on a local Ray: several trials sharing one GPU against one at a time.

On a GPU box:   python benchmarks/ray_gpu_sharing.py                 (shares 1 2 4, ~2-3 min on one H100)
On the CPU:     python benchmarks/ray_gpu_sharing.py --device cpu --shares 1 2
                (then "share" = local Ray workers, one core and one torch thread per job)
Smoke test:     python benchmarks/ray_gpu_sharing.py --quick --device cpu

The same jobs (the latest bundled BTC/USDT candles, ``--folds`` folds of ``--test-days`` x ``--seeds``
seeds, ``--episodes`` each, the machine's hardware plan) run once per share level, each on a fresh
local Ray and in a fresh folder.
Prints per level: wall time, jobs per minute, speed-up over one at a time, mean training time of one
job, mean GPU utilisation (NVML, sampled every 0.2 s) and whether the results equal the first level's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.distributed.executor import RayExecutor  # noqa: E402
from nexlify.evaluation.walkforward import plan_jobs, run_walkforward  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402


class GpuSampler:
    """Mean utilisation of GPU 0 while running (None without NVML or a GPU)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # no NVML, no GPU: nothing to sample
            self._nvml = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self) -> GpuSampler:
        if self._nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._nvml is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def recent_days(folder: Path, days: float) -> Path:
    """The last ``days`` of the bundled BTC/USDT candles as a CSV (a walk-forward of exactly those folds)."""
    import pandas as pd

    from nexlify.data.market import load_ohlcv

    frame = load_ohlcv(None)
    path = folder / "BTCUSDT_1h.csv"
    frame[frame.index >= frame.index[-1] - pd.Timedelta(days=days)].to_csv(path)
    return path


def run_level(jobs_template, share: int, on_gpu: bool, explicit: dict, workdir: Path) -> dict:
    import ray

    folder = workdir / f"share_{share}"
    jobs = [job.__class__(**{**job.to_dict(), "output_dir": str(folder / Path(*Path(job.output_dir).parts[-3:]))})
            for job in jobs_template]
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores if on_gpu else share, num_gpus=1 if on_gpu else 0, include_dashboard=False,
             log_to_driver=False)
    try:
        executor = RayExecutor(explicit=explicit, trials_per_gpu=share if on_gpu else None)
        started = time.perf_counter()
        with GpuSampler() as sampler:
            result = run_walkforward(jobs, executor)
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    outcomes = result.outcomes
    return {"share": share, "wall_s": wall, "jobs": len(outcomes),
            "mean_job_train_s": sum(o["train_seconds"] for o in outcomes) / len(outcomes),
            "gpu_util": sampler.mean,
            "fingerprint": sorted((o["job"]["fold"], o["job"]["seed"], o["test"]["agent"]["sharpe"]) for o in outcomes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=int, nargs="+", default=[1, 2, 4], help="trials at once per level")
    parser.add_argument("--device", default=None, help="cpu to force the CPU (default: the plan's device)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--train-days", type=float, default=60)
    parser.add_argument("--test-days", type=float, default=15)
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.seeds, args.episodes, args.train_days, args.test_days = 1, 2, 2, 10, 3
        args.shares = args.shares[:2]

    profiler = HardwareProfiler()
    overrides = {"episodes": args.episodes, "eval_interval": max(1, args.episodes // 2), "save_interval": args.episodes}
    if args.device is not None:
        overrides["device"] = args.device
        if args.device == "cpu":
            overrides["use_mixed_precision"] = False
    config = profiler.config.with_overrides(overrides)
    on_gpu = config.device.startswith("cuda")
    # On the CPU each job gets one core and one torch thread; on a GPU the node's plan decides.
    explicit = dict(overrides) if on_gpu else {**overrides, "num_workers": 1}
    config = config.with_overrides(explicit)
    print(f"machine: {machine()}")
    print(f"plan: {config.model_size} model on {config.device}, batch {config.batch_size}, "
          f"{config.parallel_envs} parallel envs, {config.num_workers} thread(s); {args.folds} fold(s) x "
          f"{args.seeds} seed(s) of bundled BTC/USDT, {args.episodes} episodes over {args.train_days:g} days each, "
          f"{args.test_days:g}-day test windows")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = recent_days(workdir, args.train_days * 1.25 + args.folds * args.test_days + 3)
        template = plan_jobs([data], workdir / "template", config.to_dict(), list(range(1, args.seeds + 1)),
                             folds=args.folds, train_days=args.train_days, validation_days=args.train_days / 4)
        levels = [run_level(template, share, on_gpu, explicit, workdir) for share in args.shares]
    base = levels[0]
    rows = []
    for level in levels:
        util = "-" if level["gpu_util"] is None else f"{level['gpu_util']:.0f}%"
        rows.append([level["share"], f"{level['wall_s']:.1f}", f"{60 * level['jobs'] / level['wall_s']:.1f}",
                     f"{base['wall_s'] / level['wall_s']:.2f}x", f"{level['mean_job_train_s']:.1f}", util,
                     "yes" if level["fingerprint"] == base["fingerprint"] else "no"])
    unit = "trials per GPU" if on_gpu else "local Ray workers"
    print(table([unit, "wall s", "jobs/min", "speed-up", "job train s", "GPU util", "same results"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "on_gpu": on_gpu, "levels": levels}, indent=2))


if __name__ == "__main__":
    main()
