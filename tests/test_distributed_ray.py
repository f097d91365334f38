"""Walk-forward and sweeps on a real local Ray (2 CPUs, started once for this module).

Skipped where Ray is not installed (``pip install "nexlify[distributed]"``); CI installs it.
"""

import csv
import json
import os
import signal
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "nexlify[distributed]"')

from helpers import synthetic_frame, tiny_config  # noqa: E402
from nexlify.cli import main  # noqa: E402
from nexlify.config import TrainingConfig, read_config_file  # noqa: E402
from nexlify.distributed.executor import RayExecutor  # noqa: E402
from nexlify.distributed.sweep import (  # noqa: E402
    BEST_CONFIG,
    FINAL_DIR,
    METRIC,
    SUMMARY,
    TRIALS_DIR,
    TRIALS_TABLE,
    SweepSpec,
    run_sweep,
    summary_text,
)
from nexlify.evaluation.walkforward import (  # noqa: E402
    MACHINE_KEYS,
    OUTCOME_FILE,
    FoldJob,
    plan_jobs,
    run_fold_job,
    run_walkforward,
)

CONFIG = tiny_config(episodes=2, eval_interval=1, save_interval=2, num_workers=1, parallel_envs=2).to_dict()
# Every machine setting fixed, so the Ray run and the local one train exactly the same thing.
EXPLICIT = {key: CONFIG[key] for key in MACHINE_KEYS}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "nexlify-cache"  # the folder tests/conftest.py points at
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own; later tests expect the default
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NEXLIFY_CACHE_DIR": str(cache)}})
    yield ray
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    path = tmp_path_factory.mktemp("market") / "SYNTH_1h.csv"
    synthetic_frame(rows=24 * 19, seed=5).to_csv(path)  # two folds
    return path


def _jobs(market, folder, seeds=(1,)):
    return plan_jobs([market], folder, CONFIG, list(seeds), test_days=3, train_days=8, validation_days=3)


def _learning(result):
    return sorted((json.dumps(o["job"]["fold"]), o["job"]["seed"], json.dumps(o["validation"], sort_keys=True),
                   json.dumps(o["test"], sort_keys=True)) for o in result.outcomes)


@pytest.fixture(scope="module")
def local_run(market, tmp_path_factory):
    return run_walkforward(_jobs(market, tmp_path_factory.mktemp("local")))


def test_a_walkforward_over_ray_equals_the_same_run_without_ray(local_ray, market, local_run, tmp_path):
    result = run_walkforward(_jobs(market, tmp_path / "ray"), RayExecutor(explicit=EXPLICIT))
    assert len(result.outcomes) == len(local_run.outcomes) >= 2
    assert _learning(result) == _learning(local_run)
    assert result.verdict == local_run.verdict
    # Each job reserved the one core its plan's single torch thread uses.
    assert all(o["placement"]["resources"] == {"CPU": 1.0} for o in result.outcomes)


def test_a_pooled_walkforward_over_ray_equals_the_same_run_without_ray(local_ray, market, tmp_path):
    other = tmp_path / "OTHER_1h.csv"
    synthetic_frame(rows=24 * 19, seed=6).to_csv(other)

    def jobs(folder):
        return plan_jobs([market, other], folder, CONFIG, [1], test_days=3, train_days=8, validation_days=3,
                         pool=True)

    local = run_walkforward(jobs(tmp_path / "local"))
    remote = run_walkforward(jobs(tmp_path / "ray"), RayExecutor(explicit=EXPLICIT))
    assert {o["job"]["market"] for o in remote.outcomes} == {"SYNTH_1h", "OTHER_1h"}
    assert all(o["job"]["pooled"] for o in remote.outcomes)
    assert _learning(remote) == _learning(local) and remote.verdict == local.verdict


def test_a_worker_killed_mid_job_is_retried_and_the_run_completes(local_ray, market, local_run, tmp_path):
    marker = tmp_path / "killed_pid"

    def dies_once_mid_training(job):
        def report(record):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies at its first validation check

        return run_fold_job(job, report=report)

    result = run_walkforward(_jobs(market, tmp_path / "ray"), RayExecutor(explicit=EXPLICIT,
                                                                          run_job=dies_once_mid_training))
    killed = int(marker.read_text())
    assert killed not in {o["placement"]["pid"] for o in result.outcomes}
    assert _learning(result) == _learning(local_run)


def test_a_sweep_chooses_on_validation_only_and_a_resume_skips_finished_trials(local_ray, market, tmp_path):
    calls = tmp_path / "calls.log"
    fail_once = tmp_path / "failed"

    def counted(job, report=None):
        with open(calls, "a") as log:
            log.write(job.output_dir + "\n")
        try:
            # Exclusive create: exactly one trial crashes even when trials start at the same moment
            # (a check-then-write let two concurrent trials both crash on a loaded machine).
            with open(fail_once, "x") as marker:
                marker.write(job.output_dir)
        except FileExistsError:
            return run_fold_job(job, report=report)
        raise RuntimeError("an injected crash: this trial errors, the others finish")

    space = {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "n_step": {"choice": [1, 3]}}
    jobs = _jobs(market, tmp_path / "template")
    spec = SweepSpec(space, 4, jobs, {"model_size": "tiny"}, search_seed=0)
    root = tmp_path / "sweep"
    first = run_sweep(spec, root, explicit=EXPLICIT, max_failures=0, run_job=counted)
    assert sorted(row["status"] for row in first.rows).count("error") == 1
    assert len(first.rows) == 4

    best = read_config_file(root / BEST_CONFIG)
    TrainingConfig.from_dict(best)  # accepted as a --config file
    assert best["model_size"] == "tiny" and set(best) == {"model_size", *space}
    # Chosen on validation only: the best complete trial's objective is the mean of its jobs' best
    # validation scores, and no trial kept a test number.
    trial = first.best["trial"]
    stored = [json.loads(p.read_text()) for p in (root / TRIALS_DIR / trial).rglob(OUTCOME_FILE)]
    assert len(stored) == len(jobs) and all("test" not in outcome for outcome in stored)
    assert first.best[METRIC] == pytest.approx(sum(o["validation"]["best_score"] for o in stored) / len(jobs))
    complete = [row for row in first.rows if row["status"] == "complete"]
    assert first.best[METRIC] == max(row[METRIC] for row in complete)
    assert {key: first.best[key] for key in space} == {key: best[key] for key in space}
    assert (root / TRIALS_TABLE).read_text().count("\n") == 5
    # The test verdict ran once, for the chosen config only, and is reported beside the trials tried.
    assert {Path(o["job"]["output_dir"]).parts[-4] for o in first.final.outcomes} == {trial}
    assert all(o["job"]["config_overrides"]["learning_rate"] == best["learning_rate"] for o in first.final.outcomes)
    summary = summary_text(first, spec, "sharpe")
    assert first.final.verdict in summary and "4 configs were tried" in summary and "luck" in summary

    errored = fail_once.read_text()
    calls.write_text("")
    second = run_sweep(spec, root, explicit=EXPLICIT, max_failures=0, run_job=counted)
    assert second.resumed
    rerun = calls.read_text().splitlines()
    # Only the errored trial trained again; the finished ones and the final verdict were read back.
    assert rerun and all(Path(p).parts[-4] == Path(errored).parts[-4] for p in rerun)
    assert [row for row in second.rows if row["status"] == "error"] == []


def test_a_sweeps_test_verdict_judges_the_chosen_configs_final_models_as_the_ensemble_asked_for(local_ray, market,
                                                                                         tmp_path):
    jobs = _jobs(market, tmp_path / "template", seeds=(1, 2))
    spec = SweepSpec({"n_step": {"choice": [1]}}, 1, jobs, {}, search_seed=0)
    result = run_sweep(spec, tmp_path / "sweep", explicit=EXPLICIT, max_failures=0, ensemble="mean_q")
    judged = [o for o in result.final.outcomes if o["job"].get("ensemble")]
    # One mean-Q ensemble of both seeds per fold, and the verdict is the one a local run of the same
    # final jobs with the same ensemble gives.
    assert len(judged) == len({o["job"]["fold"] for o in result.final.outcomes}) >= 2
    assert all(o["job"]["ensemble"] == "mean_q" and sorted(o["job"]["seeds"]) == [1, 2] for o in judged)
    # Their final models, as `nexlify walkforward` judges by default.
    assert all(o["job"]["model_choice"] == "last" and o["validation"]["models"] == ["seed_1/final_model.pth",
               "seed_2/final_model.pth"] for o in judged)
    final_jobs = [FoldJob.from_dict(o["job"]) for o in result.final.outcomes if not o["job"].get("ensemble")]
    assert run_walkforward(final_jobs, ensemble="mean_q", model_choice="last").verdict == result.final.verdict


def test_the_sweep_command_end_to_end_writes_its_outputs_and_a_second_call_reads_them_back(local_ray, market,
                                                                                         tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"n_step": {"choice": [1, 3]}}))
    base = tmp_path / "base.json"  # the test's small learning settings, as a user's --config
    base.write_text(json.dumps({key: CONFIG[key] for key in ("batch_size", "buffer_size", "learning_starts",
                                                              "train_frequency", "target_update_interval",
                                                              "eval_interval", "save_interval")}))
    out = tmp_path / "sweep"
    argv = ["sweep", "--space", str(space), "--trials", "2", "--data", str(market), "--train-days", "8",
            "--validation-days", "3", "--test-days", "3", "--seeds", "1", "--episodes", "2", "--model-size", "tiny",
            "--parallel-envs", "2", "--config", str(base), "--checkpoint-dir", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = (out / SUMMARY).read_text()
    assert summary in printed and "Sweep of 2 trial(s) over n_step" in summary

    # The table's best complete trial is the chosen one, and best_config.json is the user's --config
    # plus its searched value: a file `nexlify walkforward --config` accepts.
    rows = list(csv.DictReader((out / TRIALS_TABLE).open()))
    complete = [row for row in rows if row["status"] == "complete"]
    assert len(rows) == 2 and complete
    chosen = max(complete, key=lambda row: float(row[METRIC]))
    best = read_config_file(out / BEST_CONFIG)
    assert best == {**json.loads(base.read_text()), "n_step": int(chosen["n_step"])}
    assert TrainingConfig.from_dict(best).n_step == int(chosen["n_step"])
    assert f"trial {chosen['trial']} (n_step={chosen['n_step']})" in summary

    # The chosen config's test verdict is a whole walk-forward folder, trained with the chosen value.
    final = out / FINAL_DIR / chosen["trial"]
    results = json.loads((final / "walkforward_results.json").read_text())
    assert results["verdict"] in summary
    assert {job["job"]["config_overrides"]["n_step"] for job in results["jobs"]} == {int(chosen["n_step"])}
    assert (final / "walkforward_report.png").stat().st_size > 10_000
    models = sorted(final.rglob("final_model.pth"))
    assert models
    stamps = [path.stat().st_mtime_ns for path in models]

    # Called again on the same folder it resumes: the same choice and verdict, no model trained again.
    assert main(argv) == 0
    assert (out / SUMMARY).read_text() == summary
    assert [path.stat().st_mtime_ns for path in models] == stamps
