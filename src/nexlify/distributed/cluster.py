"""Joining Ray: a local instance on this machine, or a running cluster; and each node's hardware plan.

Ray is an optional extra. Everything here imports it lazily, so ``nexlify`` works without it and
``--ray`` without it says in one line how to install it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.errors import ConfigError

INSTALL_HINT = 'pip install "nexlify[distributed]"'
LOCAL = "local"  # what ``--ray`` alone means


def import_ray() -> Any:
    """The ``ray`` module, or ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray and `nexlify sweep` need Ray, which is not installed here; install it with "
                          f"{INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str = LOCAL) -> Iterator[Any]:
    """Connected Ray for the block: ``local`` starts one on this machine (all its cores), ``auto`` or
    ``HOST:PORT`` joins a running cluster. An already connected Ray (a
    notebook, the tests) is used as it is and left running."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address != LOCAL:
        check_reachable(address)
        options["address"] = address
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own; the trainer relies on the default
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--ray {address}: cannot join a Ray cluster ({first_line}); start one with "
                          "`ray start --head` and pass its address (HOST:6379), or use --ray alone for a "
                          "local Ray") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, sigterm)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that answers within ``timeout_s``; Ray itself would retry a wrong address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # ``auto`` and other forms Ray resolves itself, quickly
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: nothing answers there ({exc.strerror or exc}); start the head with "
                          "`ray start --head` and pass the address it prints (HOST:6379), or use --ray auto on "
                          "a cluster node") from None


@dataclass(frozen=True)
class NodePlan:
    """One node's Ray resources and the hardware plan a trial gets there."""

    node_id: str
    address: str
    cpus: float
    gpus: float
    vram_free_gb: float | None
    plan: TrainingConfig


def plan_on_this_node(overrides: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The hardware plan here with ``overrides`` applied (as a dict), and the least free VRAM of the cards."""
    from nexlify.hardware.profiler import HardwareProfiler

    profiler = HardwareProfiler()
    devices = (profiler.profile.get("gpu") or {}).get("devices") or []
    free = [float(d["vram_free_gb"]) for d in devices if d.get("vram_free_gb") is not None]
    return profiler.config.with_overrides(overrides).to_dict(), (min(free) if free else None)


def node_plans(ray: Any, overrides: dict[str, Any]) -> list[NodePlan]:
    """Run the hardware planner once on every alive node (a zero-CPU task pinned there)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # A zero-GPU task must still see the node's cards to plan for them (Ray 2.49-2.5x hid them by default).
    probe = ray.remote(num_cpus=0, runtime_env={"env_vars": {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}})(
        plan_on_this_node)
    nodes = [node for node in ray.nodes() if node.get("Alive") and node["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise ConfigError("the Ray cluster has no alive node with CPUs; check `ray status`")
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(overrides) for node in nodes]
    plans = []
    for node, (plan, vram_free) in zip(nodes, ray.get(refs), strict=True):
        plans.append(NodePlan(node["NodeID"], node.get("NodeManagerAddress", "?"), node["Resources"].get("CPU", 0.0),
                              node["Resources"].get("GPU", 0.0), vram_free, TrainingConfig.from_dict(plan)))
    return plans
