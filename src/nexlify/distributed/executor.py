"""Walk-forward jobs as Ray tasks: one task per (market, fold, seed), placed by Ray across a cluster.

Before the first job, the hardware planner runs once on every node; nodes whose plan makes a trial
reserve the same resources form one kind (a laptop, a GPU box). Each kind keeps as many tasks in
flight as its nodes hold at once, so Ray never queues a trial where it does not fit. Inside each
task the planner runs again on the node it landed on and sets the walk-forward's machine settings
(``MACHINE_KEYS``: device, threads, precision, ...) that the user did not set, so every node trains
with its own plan while the learning settings, and so the verdict, stay one agent's.

A worker process or node that dies mid-task gets the task retried elsewhere (``max_retries``). Each
outcome is written into the driver's run folder as it arrives, so an interrupted run resumes
without redoing finished jobs even when the nodes share no disk; models stay on the node that
trained them (use a shared ``--checkpoint-dir`` to collect them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nexlify.distributed.cluster import LOCAL, NodePlan, node_plans, ray_session
from nexlify.distributed.resources import Reservation, plan_reservation
from nexlify.errors import NexlifyError
from nexlify.evaluation.walkforward import MACHINE_KEYS, OUTCOME_FILE, FoldJob, run_fold_job

DEFAULT_MAX_RETRIES = 3
RunJob = Callable[[FoldJob], dict[str, Any]]


@dataclass(frozen=True)
class TrialKind:
    """Nodes on which a trial reserves the same resources, and how many such trials they hold at once."""

    reservation: Reservation
    slots: int
    nodes: tuple[str, ...]


def trial_kinds(nodes: list[NodePlan], trials_per_gpu: int | None = None) -> list[TrialKind]:
    """Group nodes by the reservation their plan gives a trial; most slots first (pure)."""
    groups: dict[tuple[Any, ...], tuple[Reservation, int, list[str]]] = {}
    for node in nodes:
        reservation = plan_reservation(node.plan, node.cpus, node.gpus, node.vram_free_gb, trials_per_gpu)
        slots = int(node.cpus // reservation.cpus)
        if reservation.gpus > 0:
            slots = min(slots, round(node.gpus / reservation.gpus))
        key = (reservation.cpus, reservation.gpus, tuple(sorted(reservation.overrides.items())))
        held, count, addresses = groups.get(key, (reservation, 0, []))
        groups[key] = (held, count + slots, [*addresses, node.address])
    kinds = [TrialKind(r, slots, tuple(a)) for r, slots, a in groups.values() if slots > 0]
    if any(kind.reservation.gpus > 0 for kind in kinds):
        # A CPU trial may land on a GPU node's spare cores; it must leave the cards to the trials that reserved them.
        kinds = [kind if kind.reservation.gpus > 0 else
                 replace(kind, reservation=replace(kind.reservation, overrides={
                     **kind.reservation.overrides, "device": "cpu", "use_mixed_precision": False}))
                 for kind in kinds]
    return sorted(kinds, key=lambda kind: -kind.slots)


def node_machine_settings(explicit: dict[str, Any]) -> dict[str, Any]:
    """This node's planned machine settings, leaving out the keys the user set."""
    from nexlify.hardware.profiler import HardwareProfiler

    plan = HardwareProfiler().config.with_overrides(explicit).to_dict()
    return {key: plan[key] for key in MACHINE_KEYS if key not in explicit}


def job_files(job: FoldJob) -> list[str]:
    """The market files ``job`` reads (a pooled job: every market's), in its order."""
    return [data for _, data in job.members if data is not None]


def local_copy_of_data(job: FoldJob, files: dict[str, bytes]) -> FoldJob:
    """The job reading its markets from this node: the driver's files where this node sees them, else
    copies of the shipped bytes (``files``: driver path -> contents) in this node's cache."""
    def here(data: str | None) -> str | None:
        if data is None or data not in files or Path(data).exists():
            return data
        from nexlify.hardware.profiler import default_cache_dir

        contents = files[data]
        path = default_cache_dir() / "ray_data" / hashlib.sha256(contents).hexdigest()[:16] / Path(data).name
        if not path.exists():
            from nexlify.io import write_bytes_atomic

            write_bytes_atomic(path, contents)
        return str(path)

    return replace(job, data=here(job.data), pool=tuple((name, here(data)) for name, data in job.pool))


def job_for_this_node(job: FoldJob, explicit: dict[str, Any], reserved: dict[str, Any],
                      files: dict[str, bytes]) -> FoldJob:
    """``job`` as it runs here: this node's plan for the machine settings the user left open, the
    reservation's threads and device, and the market file readable on this node."""
    overrides = {**job.config_overrides, **node_machine_settings(explicit), **reserved}
    return local_copy_of_data(replace(job, config_overrides=overrides), files)


def run_on_node(job: FoldJob, explicit: dict[str, Any], reserved: dict[str, Any], run_job: RunJob,
                *contents: bytes) -> dict[str, Any]:
    """One job inside a Ray task: plan for this node, train, and say where it ran. ``contents``: the
    job's market files (``job_files``), passed one by one so that Ray hands over their bytes."""
    import ray

    files = dict(zip(job_files(job), contents, strict=True))
    outcome = run_job(job_for_this_node(job, explicit, reserved, files))
    # The driver's names for the market files.
    outcome["job"] = {**outcome["job"], "data": job.data, "pool": job.to_dict()["pool"]}
    context = ray.get_runtime_context()
    outcome["placement"] = {"node": ray.util.get_node_ip_address(), "pid": os.getpid(),
                            "resources": context.get_assigned_resources()}
    return outcome


class RayExecutor:
    """A walk-forward executor (``run_walkforward(jobs, executor=RayExecutor(...))``) running on Ray.

    ``address``: ``local`` (a Ray on this machine, all its cores), ``auto`` or
    ``HOST:PORT``. ``explicit``: the config keys the user set (kept on every node; the rest of the
    machine settings come from each node's plan). ``max_at_once`` caps the jobs in flight over the
    whole cluster (default: as many as the nodes hold). ``run_job`` replaces ``run_fold_job`` (tests).
    """

    def __init__(self, address: str = LOCAL, *, explicit: dict[str, Any] | None = None,
                 trials_per_gpu: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_at_once: int | None = None, run_job: RunJob = run_fold_job,
                 on_plan: Callable[[list[TrialKind]], None] | None = None) -> None:
        self.address = address
        self.explicit = dict(explicit or {})
        self.trials_per_gpu = trials_per_gpu
        self.max_retries = max_retries
        self.max_at_once = max_at_once
        self.run_job = run_job
        self.on_plan = on_plan

    def __call__(self, jobs: list[FoldJob]) -> Iterator[dict[str, Any]]:
        if not jobs:
            return
        with ray_session(self.address) as ray:
            kinds = trial_kinds(node_plans(ray, self.explicit), self.trials_per_gpu)
            if not kinds:
                raise NexlifyError("no Ray node can hold one trial of this plan; check `ray status`")
            if self.on_plan is not None:
                self.on_plan(kinds)
            yield from self._run(ray, jobs, kinds)

    def _run(self, ray: Any, jobs: list[FoldJob], kinds: list[TrialKind]) -> Iterator[dict[str, Any]]:
        task = ray.remote(run_on_node)
        shipped = ship_data(ray, jobs)
        pending = list(reversed(jobs))  # pop() takes them in the planned order
        in_flight: dict[Any, tuple[FoldJob, int]] = {}
        free = [kind.slots for kind in kinds]
        try:
            while pending or in_flight:
                for index, kind in enumerate(kinds):
                    while free[index] > 0 and pending and len(in_flight) < (self.max_at_once or len(jobs)):
                        job = pending.pop()
                        ref = task.options(**kind.reservation.ray_options(), max_retries=self.max_retries,
                                           retry_exceptions=False).remote(
                            job, self.explicit, kind.reservation.overrides, self.run_job,
                            *(shipped[path] for path in job_files(job)))
                        in_flight[ref] = (job, index)
                        free[index] -= 1
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                job, index = in_flight.pop(ready[0])
                free[index] += 1
                outcome = _result(ray, ready[0])
                _keep_on_driver(job, outcome)
                yield outcome
        finally:
            for ref in in_flight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def ship_data(ray: Any, jobs: list[FoldJob]) -> dict[str, Any]:
    """Each market file once in Ray's object store, for nodes that cannot read the driver's disk."""
    return {path: ray.put(Path(path).read_bytes()) for path in dict.fromkeys(p for job in jobs for p in job_files(job))}


def _result(ray: Any, ref: Any) -> dict[str, Any]:
    """The task's outcome; a user error raised on a node comes back as itself (one ``error:`` line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, NexlifyError):
            raise cause from None
        raise


def _keep_on_driver(job: FoldJob, outcome: dict[str, Any]) -> None:
    """Store a remote node's outcome in the driver's run folder too, so a resume finds it here."""
    from nexlify.evaluation.report import write_results_json

    path = Path(job.output_dir) / OUTCOME_FILE
    if not path.exists():
        write_results_json(path, {key: value for key, value in outcome.items() if key != "placement"})

