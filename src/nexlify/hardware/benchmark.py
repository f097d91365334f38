"""Measurement: raw GFLOPS and bandwidth, and the number the planner really uses: DQN update throughput.

Everything runs under explicit time budgets (the original profiler took ~11 s; this one aims at
~2 s on a 2-core laptop with torch already imported). Each timing is the median of a few short
repetitions after a warm-up, so one scheduler hiccup does not move the plan.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from nexlify.config import MODEL_WIDTHS
from nexlify.hardware.detect import Gpu, Profile

STATE_SIZE = 12
ACTION_SIZE = 3
BENCH_BATCH_SIZES: tuple[int, ...] = (64, 256)
# A GPU is only busy at large batches; the planner picks among these from the measured speed.
GPU_BENCH_BATCH_SIZES: tuple[int, ...] = (512, 2048, 8192)
# Give up on bigger models once a smaller one already projects this many times over the plan's
# time budget: bigger ones are slower still, so measuring them only costs profile time.
_SKIP_FACTOR = 4.0


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch with ``n`` intra-op threads (the planner's num_workers)."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _timed_reps(fn: Any, device: str, budget_s: float, max_reps: int = 20) -> list[float]:
    """Warm up once, then repeat ``fn`` until ``budget_s`` is spent; per-rep seconds (at least one).

    The warm-up counts against the budget too, so a slow or contended machine gets fewer reps
    instead of a longer profile.
    """
    deadline = time.perf_counter() + budget_s
    fn()
    _sync(device)
    times: list[float] = []
    while len(times) < max_reps and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure_matmul_gflops(device: str = "cpu", n: int = 384, budget_s: float = 0.15) -> float:
    """Median float32 matmul GFLOPS on ``device`` (2*n^3 flops per product)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = _timed_reps(lambda: torch.mm(a, b), device, budget_s)
    return round(2 * n**3 / statistics.median(times) / 1e9, 2)


def measure_memory_bandwidth(size_mb: int = 64, budget_s: float = 0.15) -> float:
    """Median host copy bandwidth in GB/s (bytes read + bytes written per copy)."""
    src = np.ones(size_mb * (1 << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = _timed_reps(lambda: np.copyto(dst, src), "cpu", budget_s)
    return round(2 * src.nbytes / statistics.median(times) / 1e9, 2)


def measure_device_bandwidth(device: str, size_mb: int = 256, budget_s: float = 0.1) -> float:
    """Median on-device copy bandwidth in GB/s for a GPU."""
    import torch

    src = torch.ones(size_mb * (1 << 20) // 4, device=device)
    dst = torch.empty_like(src)
    times = _timed_reps(lambda: dst.copy_(src), device, budget_s)
    return round(2 * src.numel() * 4 / statistics.median(times) / 1e9, 2)


def build_mlp(widths: Sequence[int], in_size: int = STATE_SIZE, out_size: int = ACTION_SIZE) -> Any:
    """A plain Linear+ReLU Q-network with the given hidden widths (benchmark stand-in)."""
    import torch

    layers: list[Any] = []
    last = in_size
    for w in widths:
        layers += [torch.nn.Linear(last, w), torch.nn.ReLU()]
        last = w
    layers.append(torch.nn.Linear(last, out_size))
    return torch.nn.Sequential(*layers)


class _Adam:
    """Adam with the per-parameter tensor ops of torch's single-tensor path (same cost per step).

    ``torch.optim``'s first construction imports ``torch._dynamo`` (~2 s here); the trainer pays
    that once anyway, but a profile that must finish in ~3 s should not.
    """

    def __init__(self, params: Sequence[Any], lr: float = 5e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.t)
        bias2_sqrt = math.sqrt(1 - b2**self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                if p.grad is None:
                    continue
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
                p.addcdiv_(m, denom, value=-step_size)


def measure_update_throughput(model_size: str, batch_size: int, device: str = "cpu",
                              budget_s: float = 0.12) -> float:
    """Gradient samples per second of a real DQN update (online+target forward, Huber, backward, Adam)."""
    import torch

    online = build_mlp(MODEL_WIDTHS[model_size]).to(device)
    target = copy.deepcopy(online)
    opt = _Adam(list(online.parameters()), lr=5e-4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    states = torch.randn(batch_size, STATE_SIZE, generator=gen).to(device)
    next_states = torch.randn(batch_size, STATE_SIZE, generator=gen).to(device)
    actions = torch.randint(0, ACTION_SIZE, (batch_size, 1), generator=gen).to(device)
    rewards = torch.randn(batch_size, generator=gen).to(device)
    dones = torch.zeros(batch_size, device=device)

    def update() -> None:
        q = online(states).gather(1, actions).squeeze(1)
        with torch.no_grad():
            target_q = rewards + 0.99 * (1 - dones) * target(next_states).max(1).values
        loss = torch.nn.functional.smooth_l1_loss(q, target_q)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        opt.step()

    times = _timed_reps(update, device, budget_s, max_reps=50)
    return round(batch_size / statistics.median(times), 1)


def _planned_gpu_model(profile: Profile) -> str | None:
    """The model size the planner gives this machine's GPU (from memory tiers, before any benchmark)."""
    from nexlify.hardware.plan import plan_training

    try:
        config, _ = plan_training(replace(profile, benchmarks={}))
    except Exception:
        return None
    return config.model_size if config.device != "cpu" else None


def candidate_devices(gpu: Gpu) -> list[str]:
    """Devices worth measuring: the CPU always, plus the primary usable GPU."""
    devices = ["cpu"]
    if gpu.available:
        devices.append("mps" if gpu.backend == "mps" else "cuda")
    return devices


def pick_threads(usable: int, budget_s: float = 0.2, model_size: str = "medium",
                 batch: int = 256) -> dict[str, Any]:
    """Measure one update at 1 thread and at ``usable`` threads; keep the faster thread count.

    On a loaded machine OpenMP threads that outnumber the idle cores wait on each other at every
    layer, and the "parallel" update can run ten times slower than a single thread.
    """
    import torch

    if usable <= 1:
        return {"threads": 1, "scaling": {}}
    scaling: dict[str, float] = {}
    for n in (usable, 1):
        torch.set_num_threads(n)
        scaling[str(n)] = measure_update_throughput(model_size, batch, "cpu", budget_s=budget_s / 2)
    # Prefer more threads unless one thread is clearly (15%+) faster.
    threads = 1 if scaling["1"] > 1.15 * scaling[str(usable)] else usable
    torch.set_num_threads(threads)
    return {"threads": threads, "scaling": scaling}


def run_benchmarks(profile: Profile, budget_s: float = 2.0,
                   model_sizes: Sequence[str] | None = None,
                   batch_sizes: Sequence[int] = BENCH_BATCH_SIZES,
                   gpu_batch_sizes: Sequence[int] = GPU_BENCH_BATCH_SIZES) -> dict[str, Any]:
    """All measurements for a detected profile, within about ``budget_s`` seconds.

    Torch runs with the process's usable cores (or 1 thread when that is measurably faster, see
    ``pick_threads``). The update throughput of every (device, model size, batch) is what
    ``plan_training`` uses to pick a model on CPU-only machines; models are measured small to
    large and larger ones are skipped once a smaller one already projects far beyond the plan's
    time budget or the time budget runs out.
    """
    from nexlify.hardware.plan import PLAN_TIME_BUDGET_S, projected_training_seconds

    start = time.perf_counter()
    cores = profile.cpu.usable_cores
    sizes = list(model_sizes or MODEL_WIDTHS)
    result: dict[str, Any] = {"threads": cores, "batch_sizes": list(batch_sizes),
                              "gpu_batch_sizes": list(gpu_batch_sizes)}
    with torch_threads(cores):
        probe = pick_threads(cores, budget_s=0.12 * budget_s)
        result["threads"], result["thread_scaling"] = probe["threads"], probe["scaling"]
        result["cpu_gflops"] = measure_matmul_gflops("cpu", budget_s=0.06 * budget_s)
        result["memory_bandwidth_gbs"] = measure_memory_bandwidth(budget_s=0.04 * budget_s)
        devices = candidate_devices(profile.gpu)
        if len(devices) > 1:
            dev = devices[1]
            with contextlib.suppress(Exception):
                result["gpu_gflops"] = measure_matmul_gflops(dev, n=2048, budget_s=0.05 * budget_s)
                result["gpu_bandwidth_gbs"] = measure_device_bandwidth(dev, budget_s=0.03 * budget_s)
        throughput: dict[str, dict[str, dict[str, float]]] = {}
        # What is left is split evenly over every (device, size, batch) measurement; models go
        # small to large, so running out of time only drops the big (slow) ones.
        deadline = start + budget_s

        def batches_for(dev: str) -> Sequence[int]:
            return batch_sizes if dev == "cpu" else gpu_batch_sizes

        slots = sum(len(sizes) * len(batches_for(dev)) for dev in devices)
        per_slot = max(0.02, (deadline - time.perf_counter()) / max(1, slots))
        gpu_model = _planned_gpu_model(profile) if len(devices) > 1 else None
        # The GPU first: on a machine that has one, its numbers decide the plan.
        for dev in reversed(devices):
            throughput[dev] = {}
            # On a GPU the model comes from the memory tiers and only the batch from these numbers:
            # the planned model is measured first and always in full (a slow machine once ran out of
            # time before its big batches and was planned at batch 512, ten times slower).
            order = sizes if dev == "cpu" or gpu_model not in sizes else \
                [gpu_model, *(size for size in sizes if size != gpu_model)]
            for size in order:
                row: dict[str, float] = {}
                must = dev != "cpu" and size == gpu_model
                try:
                    for batch in batches_for(dev):
                        left = deadline - time.perf_counter()
                        if left <= 0 and not must:
                            result["incomplete"] = True
                            break
                        row[str(batch)] = measure_update_throughput(size, batch, dev,
                                                                    budget_s=max(0.02, min(per_slot, left)))
                except Exception as exc:  # a device that fails mid-way keeps what it measured
                    result.setdefault("errors", []).append(f"{dev}/{size}: {exc}")
                if not row:
                    break
                throughput[dev][size] = row
                if projected_training_seconds(max(row.values())) > _SKIP_FACTOR * PLAN_TIME_BUDGET_S:
                    break
        result["update_throughput"] = throughput
    result["duration_s"] = round(time.perf_counter() - start, 3)
    return result
