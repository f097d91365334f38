"""Walk-forward evaluation: train, select and test on many out-of-sample windows, markets and seeds.

The interface (other runners, e.g. Ray, build on exactly these names):

``FoldJob``
    Frozen, picklable, JSON-able (``to_dict``/``from_dict``) description of one (market, fold, seed):
    ``market`` name, ``data`` (absolute file path, or None for the bundled BTC/USDT), ``fold``
    (1-based), ``seed``, the exact windows ``train_start/train_end``, ``validation_start/_end``,
    ``test_start/_end`` (ISO 8601 UTC, half-open ``[start, end)``), ``config_overrides`` (TrainingConfig
    keys applied over the defaults; ``plan_jobs`` puts the whole planned config there) and
    ``output_dir`` (the job's own folder: its models and ``fold_outcome.json``).
``plan_folds(frame, ...) -> list[FoldWindows]``
    The windows of one market (``nexlify.evaluation.folds``).
``plan_jobs(data, output_dir, config_overrides, seeds, ...) -> list[FoldJob]``
    Every (market, fold, seed) job, fold by fold.
``run_fold_job(job, report=None) -> dict``
    Trains with the real ``Trainer`` on the fold's training window, keeps the model that scored best
    on its validation window, then backtests it and every baseline on its test window. Returns (and
    writes atomically to ``fold_outcome.json``) a JSON-safe outcome with ``job``, ``config``, ``rows``,
    ``validation`` (``metric``, ``best_score``, ``best_episode``, ``best`` = that check's metrics,
    ``history``) and ``test`` (metrics per policy), plus ``equity`` curves. Idempotent: when the job's
    outcome file exists it is returned without training. ``report``, when given, is called at every
    validation check with ``{"episode", "score", "metric", <validation metrics>}``.
``run_walkforward(jobs, executor=None, progress=None) -> WalkforwardResult``
    Runs the unfinished jobs through ``executor`` (a callable taking the list of jobs and yielding
    outcomes in any order; default ``local_executor(1)``), then aggregates. ``aggregate(outcomes)``,
    the verdict and the output files are pure functions of the outcomes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nexlify.config import MACHINE_SETTINGS
from nexlify.data.augment import augment_splits, min_training_rows
from nexlify.errors import CheckpointError, ConfigError, DataError
from nexlify.evaluation.backtest import agent_policy
from nexlify.evaluation.fold_markets import by_market, joined_splits, load_market, market_backtests, market_splits
from nexlify.evaluation.folds import (
    DEFAULT_TRAIN_DAYS,
    DEFAULT_VALIDATION_DAYS,
    FoldWindows,
    after_refused_gaps,
    calendar_span,
    check_gaps,
    check_windows,
    common_span,
    covers,
    plan_folds,
)
from nexlify.evaluation.snapshots import MODEL_CHOICES
from nexlify.evaluation.verdict import fold_rows, stitched_curves, summarize
from nexlify.hardware.side_by_side import RUN_MEMORY_GB, runs_at_once
from nexlify.training.worker_pool import run_side_by_side

__all__ = ["FoldJob", "WalkforwardResult", "aggregate", "local_executor", "plan_folds", "plan_jobs",
           "refuse_other_walkforwards", "run_fold_job", "run_walkforward"]

OUTCOME_FILE = "fold_outcome.json"
BUNDLED_MARKET = "BTCUSDT_1h"
POOLED_MARKET = "pooled"  # the market name of a job that trains on every market at once
VALIDATIONS_PER_RUN = 6  # eval_interval = episodes // this: enough checks to pick a model from
# One small DQN job leaves most of a GPU idle, so several share it: on one H100, 4 jobs at once ran a
# walk-forward 2.8x faster than 1 (docs/benchmarks.md); more per card is not measured yet.
JOBS_PER_GPU = 4
JOB_MEMORY_GB = RUN_MEMORY_GB  # peak RSS of one training process (docs/benchmarks.md: 544 MB)
# Settings of the machine running a job; a resumed run may differ in these and still reuse results.
# Batch, replay pace and accounts are not among them: they change what is learned
# (``defaults.WALKFORWARD_LEARNING``).
MACHINE_KEYS = MACHINE_SETTINGS
# Settings that change what a job keeps on disk, not what it learns.
OUTPUT_KEYS = ("keep_validated_models",)

Executor = Callable[[list["FoldJob"]], Iterator[dict[str, Any]]]
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FoldJob(FoldWindows):
    """One (market, fold, seed) of a walk-forward, or a pooled (fold, seed); see the module docstring."""

    market: str
    data: str | None
    seed: int
    config_overrides: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "."
    # A pooled job trains one policy on every (market name, data file) of ``pool`` and tests it on each.
    pool: tuple[tuple[str, str | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pool": [list(member) for member in self.pool]}  # as JSON gives it back

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FoldJob:
        pool = tuple((str(name), data) for name, data in values.get("pool") or ())
        return cls(**{**values, "pool": pool})

    @property
    def windows(self) -> FoldWindows:
        return FoldWindows(*(getattr(self, f.name) for f in fields(FoldWindows)))

    @property
    def members(self) -> tuple[tuple[str, str | None], ...]:
        """The (market, data) pairs this job trains on: the pool, or its one market."""
        return self.pool or ((self.market, self.data),)

    @property
    def label(self) -> str:
        return f"{self.market} fold {self.fold} seed {self.seed}"


def market_name(data: str | Path | None) -> str:
    """A market's name from its file: ``/x/LTCUSDT_1h.csv`` -> ``LTCUSDT_1h``; None -> the bundled BTC."""
    if data is None:
        return BUNDLED_MARKET
    name = Path(data).name
    for suffix in (".gz", ".csv", ".txt", ".parquet", ".pq"):
        name = name.removesuffix(suffix)
    return name


def plan_jobs(
    data: Sequence[str | Path | None],
    output_dir: str | Path,
    config_overrides: dict[str, Any],
    seeds: Sequence[int],
    *,
    test_days: float | None = None,
    folds: int | None = None,
    train_days: float = DEFAULT_TRAIN_DAYS,
    validation_days: float = DEFAULT_VALIDATION_DAYS,
    anchored: bool = False,
    devices: Sequence[str] | None = None,
    pool: bool = False,
    common_period: bool = False,
) -> list[FoldJob]:
    """Every job of a walk-forward over ``data`` (one market per entry), ordered fold by fold.

    Several markets share one set of windows, laid over all of their history (``calendar_span``), and
    each market joins the folds its history covers; ``common_period`` (and ``anchored``, whose training
    starts where every market has candles) lays them only in the period every market covers
    (``common_span``). Unpooled markets whose histories do not meet get the windows of their own
    history each. ``pool``: one job per (fold, seed) trains one policy on every market of the fold
    (``POOLED_MARKET``) instead of one per market. Loads and checks each market now, so a bad file
    fails before any training. ``devices``, when given, are handed out to the jobs in turn (several GPUs).
    """
    sources = [None if d is None else str(Path(d).resolve()) for d in data]
    names = [market_name(d) for d in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"--data names the same market twice ({', '.join(names)}); give each file once")
    if POOLED_MARKET in names:
        raise ConfigError(f"a market file may not be named {POOLED_MARKET!r} (the name of pooled jobs); rename it")
    if not seeds:
        raise ConfigError("at least one seed is needed")
    feature_set = config_overrides.get("feature_set", "basic")  # its warm-up decides the first usable candle
    frames = {name: load_market(source) for name, source in zip(names, sources, strict=True)}
    layout = {"test_days": test_days, "folds": folds, "train_days": train_days,
              "validation_days": validation_days, "anchored": anchored, "feature_set": feature_set,
              "min_train_rows": min_training_rows(config_overrides.get("augment", "none"), feature_set)}
    # Each market's history after its newest gap too long to accept (cut once; the cut is logged).
    usable = {name: after_refused_gaps(frame, frame.attrs["source"]) for name, frame in frames.items()}
    pooled = pool and len(names) > 1
    try:
        windows_of = _shared_windows(frames, usable, common_period or anchored, **layout)
    except _NoCommonPeriod as exc:
        if pooled:
            raise DataError(f"{exc}. Fix: give markets whose histories overlap for longer, use shorter windows, "
                            "or pass --no-pool to judge each market on windows of its own history") from None
        # Unpooled markets need not line up: each gets the windows of its own history.
        windows_of = {name: _shared_windows({name: frame}, {name: usable[name]}, True, **layout)[name]
                      for name, frame in frames.items()}
    by_fold = {name: {window.fold: window for window in windows} for name, windows in windows_of.items()}
    jobs = []
    for fold in sorted({fold for windows in by_fold.values() for fold in windows}):
        # The markets whose history covers this fold (a market with a shorter history has fewer folds).
        present = [(name, source) for name, source in zip(names, sources, strict=True) if fold in by_fold[name]]
        groups = [(POOLED_MARKET, None, tuple(present))] if pooled else [(name, source, ()) for name, source in present]
        for seed in seeds:
            for name, source, members in groups:
                window = by_fold[members[0][0] if members else name][fold]
                folder = Path(output_dir) / name / f"fold_{fold:02d}" / f"seed_{seed}"
                jobs.append(FoldJob(**asdict(window), market=name, data=source, seed=int(seed),
                                    output_dir=str(folder), pool=members))
    return assign_config(jobs, config_overrides, devices)


class _NoCommonPeriod(DataError):
    """The markets' histories share too little time to lay one set of windows over them all."""


def _shared_windows(frames: dict[str, Any], usable: dict[str, tuple[Any, str]], common_period: bool,
                    **layout: Any) -> dict[str, list[FoldWindows]]:
    """Each market's folds (name -> windows) of one set of fold windows for every market of ``frames``
    (name -> candles), laid over their ``usable`` spans (name -> (candles, label),
    ``after_refused_gaps``): all of their history (``calendar_span``), or with ``common_period`` only
    the period they all cover. A market joins the folds its usable history covers (``covers``); each is
    checked against the market's whole candles and gaps, so a fold never reaches back across a cut."""
    feature_set = layout["feature_set"]
    spans = {name: span for name, (span, _) in usable.items()}
    if len(frames) > 1:
        calendar = None if common_period else calendar_span(spans)
        try:
            windows = (plan_folds(calendar, **layout, label="the markets' history") if calendar is not None else
                       plan_folds(common_span(spans), **layout, label="the period every market covers"))
        except DataError as exc:  # no common period, or one too short for the windows
            if calendar is not None:
                raise
            raise _NoCommonPeriod(str(exc).partition(". Fix:")[0].partition("; give markets")[0]) from None
    else:
        span, label = next(iter(usable.values()))
        windows = plan_folds(span, **layout, label=label)
    windows_of = {}
    for name, frame in frames.items():
        own = [window for window in windows if covers(spans[name], window, feature_set)]
        if not own:
            span = spans[name]
            raise DataError(
                f"{usable[name][1]}: its candles ({span.index[0]:%Y-%m-%d} to {span.index[-1]:%Y-%m-%d}) hold none "
                f"of the folds laid over the markets' history ({windows[0].train_start[:10]} to "
                f"{windows[-1].test_end[:10]}; each fold needs {layout['train_days']:g} training and "
                f"{layout['validation_days']:g} validation days before its test window). Fix: give this market a "
                "longer history, use smaller --train-days / --validation-days / --test-days, or leave it out")
        check_windows(frame, own, frame.attrs["source"], layout["min_train_rows"])
        check_gaps(frame, own, frame.attrs["source"], feature_set)
        windows_of[name] = own
    return windows_of


def assign_config(jobs: Sequence[FoldJob], config_overrides: dict[str, Any],
                  devices: Sequence[str] | None = None) -> list[FoldJob]:
    """``jobs`` with ``config_overrides``; ``devices``, when given, handed out to the jobs in turn."""
    out = []
    for i, job in enumerate(jobs):
        overrides = dict(config_overrides)
        if devices:
            overrides["device"] = devices[i % len(devices)]
        out.append(replace(job, config_overrides=overrides))
    return out


def finished_outcome(job: FoldJob) -> dict[str, Any] | None:
    """The stored outcome of ``job`` when it finished earlier; None when it has to run.

    A folder holding the outcome of a different job (other windows, seed or learning settings) is
    refused rather than reused or overwritten.
    """
    path = Path(job.output_dir) / OUTCOME_FILE
    if not path.exists():
        return None
    try:
        outcome = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # torn by a crash before the atomic rename existed: run it again
    stored = {**outcome["job"], "output_dir": job.output_dir}
    differences = _differences(_learning_view(stored), _learning_view(job.to_dict()))
    if differences:
        moved = any(stored.get(f.name) != getattr(job, f.name) for f in fields(FoldWindows))
        hint = (" (other fold windows: the same --train-days, --validation-days, --test-days or --folds, "
                "--anchored and --common-period as that run reuse it)" if moved else "")
        raise CheckpointError(
            f"{path} holds the result of a different walk-forward job ({differences}){hint}; "
            "use another --checkpoint-dir or delete that folder")
    return outcome


def refuse_other_walkforwards(jobs: Sequence[FoldJob]) -> None:
    """CheckpointError when any job's folder holds another job's result: called before a run writes
    anything, so a refused run leaves the folder as it was."""
    for job in jobs:
        finished_outcome(job)


def _differences(stored: dict[str, Any], wanted: dict[str, Any], most: int = 3) -> str:
    """What differs between a stored job and the one wanted, as "key stored -> wanted" (the first
    ``most``, settings named by their config key); "" when they are the same job."""
    settings_stored, settings_wanted = stored["config_overrides"], wanted["config_overrides"]
    pairs = [(key, stored.get(key), wanted.get(key))
             for key in sorted((stored.keys() | wanted.keys()) - {"config_overrides"})]
    pairs += [(key, settings_stored.get(key), settings_wanted.get(key))
              for key in sorted(settings_stored.keys() | settings_wanted.keys())]
    changed = [f"{key} {before!r} -> {after!r}" for key, before, after in pairs if before != after]
    if not changed:
        return ""
    more = f", and {len(changed) - most} more" if len(changed) > most else ""
    return ", ".join(changed[:most]) + more


def _learning_view(job: dict[str, Any]) -> dict[str, Any]:
    # The market's name and windows identify its data; the file may have moved (or be the bundled copy).
    # Overrides are resolved against today's defaults, so a job stored before a config key existed
    # (it trained with that key's default) still matches, and a sparse one matches its full form.
    from nexlify.config import TrainingConfig

    resolved = {**TrainingConfig().to_dict(), **job["config_overrides"]}
    overrides = {k: v for k, v in resolved.items() if k not in (*MACHINE_KEYS, *OUTPUT_KEYS)}
    return {**job, "config_overrides": overrides, "data": None,
            "pool": [name for name, _ in job.get("pool") or ()]}


def run_fold_job(job: FoldJob, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, select on validation and test one job; see the module docstring."""
    import torch

    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.report import write_results_json
    from nexlify.training.monitor import TrainingMonitor
    from nexlify.training.trainer import BEST_MODEL, Trainer

    done = finished_outcome(job)
    if done is not None:
        return done
    output_dir = Path(job.output_dir)
    config = TrainingConfig().with_overrides({**job.config_overrides, "seed": job.seed, "data_days": None})
    markets = market_splits(job, config.feature_set)
    splits = joined_splits({name: augment_splits(s, config.augment) for name, s in markets.items()})
    # A replay memory larger than everything the job will ever collect only costs RAM (N jobs at once).
    collected = config.episodes * (len(splits.train) - 1)
    config = config.with_overrides({"buffer_size": max(1, min(config.buffer_size, collected))})
    torch.manual_seed(job.seed)
    metric = config.validation_metric

    def on_validation(record: dict[str, Any]) -> None:
        if report is not None:
            report({**record, "metric": metric})

    metadata = {"data_source": splits.source, "data_origin": job.data or "bundled", "data_days": None,
                "walkforward_job": job.to_dict()}
    trainer = Trainer(config, splits, output_dir, monitor=TrainingMonitor(config.episodes, quiet=True),
                      metadata=metadata, on_validation=on_validation)
    state = trainer.train()
    best = AdaptiveDQNAgent.from_checkpoint(output_dir / BEST_MODEL, device=trainer.config.device)
    best_record = next((v for v in state.validation if v["episode"] == state.best_episode), None)
    outcome = {
        "job": job.to_dict(),
        "config": trainer.config.to_dict(),
        "periods_per_year": splits.periods_per_year,
        "episodes_done": state.episodes_done,
        "train_seconds": state.train_seconds,
        "validation": {
            "metric": metric,
            "best_score": state.best_score,
            "best_episode": state.best_episode,
            "best": best_record,
            "history": [{"episode": v["episode"], "score": v["score"]} for v in state.validation],
        },
    }
    # The fold's folder keeps the baselines' backtests for the fold's other seeds and its ensemble.
    outcome.update(by_market({name: market_backtests(agent_policy(best), market, trainer.config,
                                                     baseline_cache=output_dir.parent)
                              for name, market in markets.items()}, pooled=bool(job.pool)))
    write_results_json(output_dir / OUTCOME_FILE, outcome)
    return outcome


def market_outcomes(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """One outcome per market tested: a pooled job's outcome is split into its markets' views."""
    if "markets" not in outcome:
        return [outcome]  # one market's outcome
    job = outcome["job"]
    files = dict(job["pool"])
    shared = {key: value for key, value in outcome.items() if key != "markets"}
    return [{**shared, **result, "job": {**job, "market": name, "data": files[name], "pooled": True}}
            for name, result in outcome["markets"].items()]


def local_executor(jobs: int = 1) -> Executor:
    """Run jobs in this process (``jobs=1``) or in ``jobs`` worker processes sharing the machine."""

    def run(pending: list[FoldJob]) -> Iterator[dict[str, Any]]:
        if jobs <= 1 or len(pending) <= 1:
            for job in pending:
                yield run_fold_job(job)
            return
        for _, outcome in run_side_by_side(run_fold_job, pending, min(jobs, len(pending))):
            yield outcome

    return run


@dataclass
class WalkforwardResult:
    """Every outcome, the per-fold table, the verdict per market and over all of them."""

    outcomes: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    markets: dict[str, dict[str, Any]]
    overall: dict[str, Any]

    @property
    def verdict(self) -> str:
        return self.overall["sentence"]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the equity curves (those stay in each job's ``fold_outcome.json``)."""
        keys = ("job", "rows", "episodes_done", "train_seconds", "validation", "validation_backtest", "test")
        jobs = [{key: o[key] for key in keys if key in o} for o in self.outcomes]
        return {"verdict": self.verdict, "overall": self.overall, "markets": self.markets,
                "folds": self.folds, "jobs": jobs}


def aggregate(outcomes: Sequence[dict[str, Any]]) -> WalkforwardResult:
    """The walk-forward's tables and verdicts from its outcomes (pure); pooled outcomes count once per market."""
    views = [view for outcome in outcomes for view in market_outcomes(outcome)]
    views.sort(key=lambda o: (o["job"]["market"], o["job"]["fold"], bool(o["job"].get("ensemble")), o["job"]["seed"]))
    rows = fold_rows(views)
    markets_in_order = list(dict.fromkeys(r["market"] for r in rows))
    stitched = {m: stitched_curves(views, m) for m in markets_in_order}
    markets = {m: summarize([r for r in rows if r["market"] == m], {m: stitched[m]}, m) for m in markets_in_order}
    label = "All markets" if len(markets) > 1 else markets_in_order[0]
    overall = summarize(rows, stitched, label)
    return WalkforwardResult(views, rows, markets, overall)


def run_walkforward(jobs: Sequence[FoldJob], executor: Executor | None = None,
                    progress: Progress | None = None, ensemble: str | None = None,
                    model_choice: str = "best") -> WalkforwardResult:
    """Run the unfinished ``jobs`` (finished ones are read back, not trained again) and aggregate.

    ``ensemble`` (``mean_q``, ``vote`` or ``consensus``): once a fold's seeds are all done, the models
    ``model_choice`` picks from their validated snapshots (``snapshots``; ``best``: each seed's best
    model; ``last``, the CLI's default: each seed's final model) act as one policy, and that policy is
    the one judged (``fold_ensemble``); None judges the seeds' mean (their best models). One seed forms
    an ensemble only when the choice picks several of its snapshots or another than its best.
    ``progress`` gets ``{"event": "job", "outcome", "done", "total", "resumed", "elapsed_seconds"}``
    after every job and ``{"event": "fold", "market", "fold", "folds", "row"}`` for each market of a
    fold once its seeds (and their ensemble) are done.
    """
    from nexlify.evaluation.fold_ensemble import models_present, run_fold_ensemble

    if not jobs:
        raise ConfigError("no walk-forward jobs to run")
    if model_choice not in MODEL_CHOICES:
        raise ConfigError(f"model choice must be one of {', '.join(MODEL_CHOICES)}; got {model_choice!r}")
    if model_choice != "best" and ensemble is None:
        raise ConfigError(f"the model choice {model_choice!r} acts through the seeds' ensemble; choose an "
                          "ensemble mode (e.g. mean_q) or the model choice 'best'")
    if model_choice in ("top2", "all"):
        # Every snapshot must stay on disk to be chosen from; that changes no job's learning. (`best` and
        # `last` are best_model.pth and final_model.pth, which every run keeps.)
        jobs = [replace(job, config_overrides={**job.config_overrides, "keep_validated_models": True})
                for job in jobs]
    executor = executor or local_executor(1)
    outcomes: list[dict[str, Any]] = []
    pending: list[FoldJob] = []
    for job in jobs:
        done = finished_outcome(job)
        if done is None:
            pending.append(job)
        else:
            outcomes.append(done)
    groups: dict[tuple[str, int], list[FoldJob]] = {}
    for job in jobs:
        groups.setdefault((job.market, job.fold), []).append(job)
    last_fold = max(job.fold for job in jobs)
    finished: dict[tuple[str, int], list[dict[str, Any]]] = {}
    ensembles: list[dict[str, Any]] = []
    use_ensemble = ensemble is not None and (len({job.seed for job in jobs}) > 1 or model_choice != "best")
    started = time.perf_counter()

    def tell(outcome: dict[str, Any], resumed: bool) -> None:
        key = (outcome["job"]["market"], int(outcome["job"]["fold"]))
        finished.setdefault(key, []).append(outcome)
        if progress is not None:
            progress({"event": "job", "outcome": outcome, "done": len(outcomes), "total": len(jobs),
                      "resumed": resumed, "elapsed_seconds": time.perf_counter() - started})
        if len(finished[key]) < len(groups[key]):
            return
        members = list(finished[key])
        # Ensembles need every seed's model here; a Ray node without a shared folder keeps its own.
        if use_ensemble and models_present(groups[key]):
            ensembles.append(run_fold_ensemble(groups[key], ensemble, model_choice, finished[key]))
            members.append(ensembles[-1])
        if progress is None:
            return
        views = [view for member in members for view in market_outcomes(member)]
        for row in fold_rows(views):
            progress({"event": "fold", "market": row["market"], "fold": key[1], "folds": last_fold, "row": row})

    resumed_outcomes, outcomes = outcomes, []
    for outcome in resumed_outcomes:
        outcomes.append(outcome)
        tell(outcome, resumed=True)
    for outcome in executor(pending):
        outcomes.append(outcome)
        tell(outcome, resumed=False)
    if use_ensemble and len(ensembles) < len(groups):
        ensembles = []  # one fold without its ensemble: judge every fold the same way, by the seeds' mean
    return aggregate([*outcomes, *ensembles])


def parallel_plan(device: str, num_workers: int, usable_cores: int, gpus: int, available_gb: float,
                  requested: int | None = None, jobs_total: int | None = None,
                  rates: dict[int, float] | None = None) -> tuple[int, int, list[str] | None, str]:
    """How many jobs run at once, torch threads per job, devices to hand out, and why.

    CPU: with ``rates`` (the measured loop speed by torch threads of the planned setting), the count
    that finishes the ``jobs_total`` jobs soonest (``nexlify.hardware.side_by_side``); without, as
    many jobs as the cores hold at the plan's thread count; either within the RAM.
    GPU: ``JOBS_PER_GPU`` per card, at most one per core, threads split among them.
    """
    cores = max(1, usable_cores)
    if device.startswith("cuda") and gpus > 0:
        jobs = requested or min(JOBS_PER_GPU * gpus, cores)
        threads = max(1, cores // jobs)
        devices = [f"cuda:{i}" for i in range(gpus)] if device == "cuda" or gpus > 1 else None
        why = (f"{jobs} jobs at once on {gpus} GPU(s) ({'as asked' if requested else f'{JOBS_PER_GPU} per GPU'}), "
               f"{threads} torch thread(s) each")
        return jobs, threads, devices, why
    by_memory = max(1, int(available_gb / JOB_MEMORY_GB))
    if requested:
        jobs, threads, source = requested, max(1, min(num_workers, cores // requested)), "as asked"
    else:
        jobs, threads, source = runs_at_once(jobs_total or cores, cores, num_workers, by_memory, rates)
    return jobs, threads, None, f"{jobs} job(s) at once on {cores} core(s) ({source}), {threads} torch thread(s) each"
