"""What one trial reserves on a Ray node: the cores and the share of a GPU its hardware plan uses.

Pure functions of a plan and a node's facts, so the rule is testable without Ray. A CPU plan reserves
its torch threads (``num_workers``); the vector environments step in the same thread, so nothing else.
A GPU plan for these small networks rarely fills a card, so ``trials_per_gpu`` trials share one: each
reserves ``1 / trials_per_gpu`` of it, as many as fit its free memory (replay kept on the card plus a
CUDA context each), at most ``MAX_TRIALS_PER_GPU``, and an equal part of the node's cores for its host
side. The user may set ``trials_per_gpu`` after measuring (``benchmarks/ray_gpu_sharing.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.hardware.plan import bytes_per_transition

GB = float(1 << 30)
MAX_TRIALS_PER_GPU = 4
CUDA_CONTEXT_GB = 0.5  # what torch's CUDA context and allocator take on a card before any tensor
VRAM_USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class Reservation:
    """Ray resources for one trial and the config keys that make the trial use exactly them."""

    cpus: int
    gpus: float
    overrides: dict[str, Any]
    reason: str

    def ray_options(self) -> dict[str, float]:
        """Keyword arguments for ``ray.remote(...).options``."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    def tune_resources(self) -> dict[str, float]:
        """The same reservation in ``tune.with_resources`` form."""
        return {"cpu": self.cpus, "gpu": self.gpus}


def gpu_memory_per_trial_gb(plan: TrainingConfig) -> float:
    """VRAM one trial needs: a CUDA context, plus the replay memory unless the plan keeps it in host RAM."""
    replay_on_card = plan.optimization_level != "gpu_conserve"
    replay_gb = plan.buffer_size * bytes_per_transition(12, plan.replay_state_dtype) / GB if replay_on_card else 0.0
    return CUDA_CONTEXT_GB + replay_gb


def trials_sharing_a_gpu(plan: TrainingConfig, vram_free_gb: float) -> tuple[int, str]:
    """How many trials share one card, and why."""
    need = gpu_memory_per_trial_gb(plan)
    by_memory = max(1, math.floor(VRAM_USABLE_FRACTION * vram_free_gb / need))
    count = min(MAX_TRIALS_PER_GPU, by_memory)
    limit = (f"at most {MAX_TRIALS_PER_GPU}" if count == MAX_TRIALS_PER_GPU
             else f"{vram_free_gb:.1f} GB free / {need:.2f} GB each")
    return count, f"{count} trial(s) per GPU ({limit})"


def plan_reservation(plan: TrainingConfig, node_cpus: float, node_gpus: float, vram_free_gb: float | None,
                     trials_per_gpu: int | None = None) -> Reservation:
    """What a trial planned as ``plan`` reserves on a node with ``node_cpus`` and ``node_gpus`` Ray resources."""
    cpus_available = max(1, int(node_cpus))
    if plan.device.startswith("cuda") and node_gpus >= 1:
        if trials_per_gpu is None:
            share, why = trials_sharing_a_gpu(plan, float(vram_free_gb or 0.0))
        else:
            share, why = trials_per_gpu, f"{trials_per_gpu} trial(s) per GPU (asked for)"
        cpus = max(1, min(plan.num_workers, cpus_available // max(1, int(node_gpus) * share)))
        # Ray hands each trial its own card ids (CUDA_VISIBLE_DEVICES), so the trial sees its card as cuda:0.
        overrides: dict[str, Any] = {"device": "cuda"} if plan.device != "cuda" else {}
        if cpus != plan.num_workers:
            overrides["num_workers"] = cpus
        return Reservation(cpus, round(1.0 / share, 4), overrides,
                           f"{why}; {cpus} host thread(s) each")
    cpus = min(plan.num_workers, cpus_available)
    overrides = {"num_workers": cpus} if cpus != plan.num_workers else {}
    if plan.device.startswith("cuda"):
        # A GPU plan on a node that lends Ray no GPU: run on the CPU rather than on a card nobody reserved.
        overrides.update(device="cpu", use_mixed_precision=False)
    return Reservation(cpus, 0.0, overrides, f"{cpus} core(s): the plan's torch threads ({plan.device})")
