"""``nexlify sweep``: Ray Tune searches the config keys of a space file, judged on validation windows only.

Each trial is one config from the space. It trains every walk-forward job (market x fold x seed)
with that config and reports, at every validation check the trainer makes, the mean over jobs of
the best validation score so far: that mean over the walk-forward's validation windows is the
objective. Test windows play no part: a trial keeps no test number (its stored outcomes are cut to
their validation part), and ASHA stops a trial whose running objective falls behind the others at
the same check. The best trial's config is written as ``best_config.json``; then, once and only for
it, the full walk-forward runs on the test windows and its verdict is reported beside the number of
trials tried (the more configs tried, the likelier the best one's validation score is luck).

The sweep folder holds Tune's own state (``tune/``), so running the same command again restores the
sweep: finished trials are not trained again, unfinished and errored ones are.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nexlify.distributed.cluster import LOCAL, node_plans, ray_session
from nexlify.distributed.executor import RayExecutor, TrialKind, job_files, job_for_this_node, trial_kinds
from nexlify.distributed.space import plain_values, tune_space
from nexlify.errors import ConfigError, NexlifyError
from nexlify.evaluation.snapshots import validation_checks
from nexlify.evaluation.walkforward import (
    MACHINE_KEYS,
    OUTCOME_FILE,
    FoldJob,
    WalkforwardResult,
    run_fold_job,
    run_walkforward,
)
from nexlify.io import write_text_atomic

TUNE_DIR = "tune"
TRIALS_DIR = "trials"
FINAL_DIR = "final"
REQUEST_FILE = "sweep_request.json"
BEST_CONFIG = "best_config.json"
TRIALS_TABLE = "sweep_trials.csv"
SUMMARY = "sweep_summary.txt"
METRIC = "validation_score"
REDUCTION_FACTOR = 2
DEFAULT_MAX_FAILURES = 3
RunJob = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class SweepSpec:
    """What defines a sweep: a folder holding another one is refused rather than mixed up."""

    space: dict[str, Any]
    trials: int
    jobs: list[FoldJob]  # the walk-forward's jobs with the base config; trials and the verdict get own folders
    base_values: dict[str, Any]  # config keys from the user's --config file: kept in best_config.json
    search_seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "trials": self.trials, "search_seed": self.search_seed,
                "base_values": self.base_values, "jobs": [job.to_dict() for job in self.jobs]}

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to resume: all but the machine settings, which each node plans anew."""
        values = json.loads(json.dumps(self.to_dict(), default=str))
        for job in values["jobs"]:
            job["config_overrides"] = {k: v for k, v in job["config_overrides"].items() if k not in MACHINE_KEYS}
        return values


def checks_per_job(episodes: int, eval_interval: float) -> int:
    """Validation checks the trainer makes in one job: one per ``eval_interval`` episodes, and at the end."""
    return validation_checks(episodes, eval_interval)


def early_stopping(jobs: list[FoldJob]) -> Any:
    """ASHA on the reported validation objective: a trial is first judged after one whole job's checks."""
    from ray.tune.schedulers import ASHAScheduler

    config = jobs[0].config_overrides
    return ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max", max_t=max_reports(jobs),
                         grace_period=checks_per_job(config["episodes"], config["eval_interval"]),
                         reduction_factor=REDUCTION_FACTOR)


def max_reports(jobs: list[FoldJob]) -> int:
    """Reports of a trial that trains every job: each job's checks, then the final objective once more."""
    config = jobs[0].config_overrides
    return checks_per_job(config["episodes"], config["eval_interval"]) * len(jobs) + 1


def job_folder(job: FoldJob) -> Path:
    """The job's place inside a walk-forward folder: MARKET/fold_NN/seed_S."""
    return Path(*Path(job.output_dir).parts[-3:])


def final_folder(root: Path, best: dict[str, Any]) -> Path:
    """Where the chosen trial's test verdict goes (per trial: a resumed sweep may choose another one)."""
    return root / FINAL_DIR / str(best["trial"])


def validation_only(outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome without its test part (each market's, when pooled): what a sweep trial may keep."""
    kept = {key: value for key, value in outcome.items() if key not in ("test", "equity")}
    if "markets" in outcome:
        kept["markets"] = {name: validation_only(result) for name, result in outcome["markets"].items()}
    return kept


def make_trainable(spec: SweepSpec, root: Path, explicit: dict[str, Any], reserved: dict[str, Any],
                   run_job: RunJob = run_fold_job) -> Callable[..., None]:
    """The Tune function trial: train the walk-forward's jobs with the trial's config, report validation."""
    def trainable(config: dict[str, Any], data: dict[str, bytes]) -> None:
        from ray import tune

        values = plain_values(config)
        trial_root = root / TRIALS_DIR / tune.get_context().get_trial_id()
        best: dict[int, float] = {}

        def objective() -> float:
            return sum(best.values()) / len(best)

        for index, job in enumerate(spec.jobs):
            folder = trial_root / job_folder(job)
            trial_job = replace(job, config_overrides={**job.config_overrides, **values}, output_dir=str(folder))
            trial_job = job_for_this_node(trial_job, explicit, reserved, data)

            def report(record: dict[str, Any], index: int = index) -> None:
                best[index] = max(best.get(index, -math.inf), float(record["score"]))
                tune.report({METRIC: objective(), "jobs_done": index, "episode": record["episode"]})

            outcome = validation_only(run_job(trial_job, report=report))
            write_text_atomic(folder / OUTCOME_FILE, json.dumps(outcome, indent=2, default=str))
            score = outcome["validation"]["best_score"]
            best[index] = -math.inf if score is None else float(score)
        tune.report({METRIC: objective(), "jobs_done": len(spec.jobs), "complete": True})

    return trainable


def resumes_sweep_in(root: Path, spec: SweepSpec) -> bool:
    """True when ``root`` holds this same sweep (resume); ConfigError when it holds another one."""
    path = root / REQUEST_FILE
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    if stored != spec.identity():
        raise ConfigError(f"{root} holds a different sweep (other space, trials, data or settings); use another "
                          "--checkpoint-dir, or delete that folder to start over")
    return True


def trial_table(results: Any, space: dict[str, Any], max_t: int) -> list[dict[str, Any]]:
    """One row per trial: its id, searched values, objective, checks reached and how it ended."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        complete = bool(metrics.get("complete"))
        status = "error" if result.error else ("complete" if complete else "stopped early (ASHA)")
        row = {"trial": metrics.get("trial_id") or Path(str(result.path)).name, "status": status}
        row.update({key: (result.config or {}).get(key) for key in space})
        row.update({METRIC: metrics.get(METRIC), "checks": metrics.get("training_iteration"), "max_checks": max_t,
                    "error": str(result.error).strip().splitlines()[-1] if result.error else ""})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "complete", -(r[METRIC] if r[METRIC] is not None else -math.inf)))


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The complete trial with the highest validation objective."""
    complete = [row for row in rows if row["status"] == "complete" and row[METRIC] is not None]
    if not complete:
        raise NexlifyError("no sweep trial finished all its jobs; see the errors in " + TRIALS_TABLE)
    return max(complete, key=lambda row: row[METRIC])


@dataclass
class SweepResult:
    """The trials table, the chosen config and the one test verdict."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    best_config: dict[str, Any]
    final: WalkforwardResult
    resumed: bool


def run_sweep(spec: SweepSpec, root: str | Path, *, address: str = LOCAL,
              explicit: dict[str, Any] | None = None, trials_per_gpu: int | None = None,
              max_failures: int = DEFAULT_MAX_FAILURES, run_job: RunJob = run_fold_job,
              on_plan: Callable[[list[TrialKind]], None] | None = None,
              log_trials: bool = False, final_progress: Any = None, ensemble: str | None = None,
              model_choice: str | None = None) -> SweepResult:
    """Search, choose on validation, write the outputs, then run the chosen config's test verdict once.

    Trials are judged on their seeds' validation scores; ``ensemble`` (as in ``run_walkforward``) is how
    the chosen config's seeds are judged on the test windows, through the models ``model_choice`` picks
    (None: the walk-forward's default, each seed's final model; each seed's best without an ensemble).
    """
    from ray import tune

    from nexlify.evaluation.defaults import default_model_choice

    root = Path(root).resolve()
    explicit = dict(explicit or {})
    resumed = resumes_sweep_in(root, spec)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / REQUEST_FILE, json.dumps(spec.identity(), indent=2))
    scheduler = early_stopping(spec.jobs)
    with ray_session(address) as ray:
        kinds = trial_kinds(node_plans(ray, explicit), trials_per_gpu)
        if not kinds:
            raise NexlifyError("no Ray node can hold one trial of this plan; check `ray status`")
        if on_plan is not None:
            on_plan(kinds)
        # Tune gives every trial one reservation: the kind that holds the most trials at once.
        reservation = kinds[0].reservation
        trainable = tune.with_resources(
            tune.with_parameters(make_trainable(spec, root, explicit, reservation.overrides, run_job),
                                 data={path: Path(path).read_bytes() for job in spec.jobs for path in job_files(job)}),
            reservation.tune_resources())
        tune_path = root / TUNE_DIR
        callbacks = [trial_log_callback()] if log_trials else []
        if tune.Tuner.can_restore(str(tune_path)):
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_errored=True)
            resumed = True
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            tuner = tune.Tuner(
                trainable, param_space=tune_space(spec.space),
                tune_config=tune.TuneConfig(num_samples=spec.trials, scheduler=scheduler, reuse_actors=True,
                                            search_alg=BasicVariantGenerator(random_state=spec.search_seed)),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(root), verbose=0, callbacks=callbacks,
                                          failure_config=tune.FailureConfig(max_failures=max_failures)))
        results = tuner.fit()
        rows = trial_table(results, spec.space, max_reports(spec.jobs))
        _write_table(root / TRIALS_TABLE, rows)
        best = best_trial(rows)
        values = {key: best[key] for key in spec.space}
        best_config = {**spec.base_values, **values}
        write_text_atomic(root / BEST_CONFIG, json.dumps(best_config, indent=2))
        final_jobs = [replace(job, config_overrides={**job.config_overrides, **values},
                              output_dir=str(final_folder(root, best) / job_folder(job)))
                      for job in spec.jobs]
        executor = RayExecutor(address, explicit=explicit, trials_per_gpu=trials_per_gpu)
        # Judged as `nexlify walkforward` judges by default: the seeds' ensemble of their final models.
        final = run_walkforward(final_jobs, executor, progress=final_progress, ensemble=ensemble,
                                model_choice=model_choice or default_model_choice(ensemble))
    return SweepResult(rows, best, best_config, final, resumed)


def trial_log_callback() -> Any:
    """A Tune callback printing one line per finished trial to stderr (Tune pickles it: no console inside)."""
    from ray import tune

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    class TrialLog(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            result = trial.last_result or {}
            how = "complete" if result.get("complete") else "stopped early"
            score = result.get(METRIC)
            say(f"trial {trial.trial_id} {how}: validation {'-' if score is None else f'{score:.3f}'} "
                f"({sum(t.status in ('TERMINATED', 'ERROR') for t in trials)}/{len(trials)} done)")

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            say(f"trial {trial.trial_id} failed; see {TRIALS_TABLE}")

    return TrialLog()


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    write_text_atomic(path, pd.DataFrame(rows).to_csv(index=False))


def summary_text(result: SweepResult, spec: SweepSpec, metric: str) -> str:
    """The sweep's plain-words report: the choice, on validation; the verdict, on test; and the caveat."""
    tried = len(result.rows)
    stopped = sum(row["status"].startswith("stopped") for row in result.rows)
    failed = sum(row["status"] == "error" for row in result.rows)
    chosen = ", ".join(f"{key}={result.best[key]}" for key in spec.space)
    lines = [
        f"Sweep of {tried} trial(s) over {', '.join(spec.space)} ({stopped} stopped early by ASHA, {failed} failed).",
        f"Chosen on validation windows only: trial {result.best['trial']} ({chosen}), mean best validation "
        f"{metric} {result.best[METRIC]:.3f} over {len(spec.jobs)} job(s).",
        f"{BEST_CONFIG} holds it; use it with `nexlify train --config` or `nexlify walkforward --config`.",
        "",
        f"Test verdict, run once, for the chosen config only: {result.final.verdict}",
        f"(its walk-forward outputs: {FINAL_DIR}/{result.best['trial']}/)",
        "",
        f"{tried} configs were tried. The more configs a search tries, the likelier it is that the best "
        "validation score is partly luck, so expect the chosen config to do worse on new data than on the "
        "validation windows; the test verdict above, on windows the search never saw, is the number to trust.",
    ]
    return "\n".join(lines) + "\n"
