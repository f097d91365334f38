"""The distributed layer's pure parts, which need no Ray: space files, reservations, trial kinds, choice."""

import json
import math
from pathlib import Path

import pytest

from nexlify.config import TrainingConfig
from nexlify.distributed.cluster import NodePlan
from nexlify.distributed.resources import gpu_memory_per_trial_gb, plan_reservation
from nexlify.distributed.space import read_space, validate_space
from nexlify.distributed.sweep import METRIC, best_trial, checks_per_job
from nexlify.errors import ConfigError


def test_a_valid_space_file_is_read_back(tmp_path):
    space = {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "n_step": {"choice": [1, 3, 5]},
             "gamma": {"uniform": [0.9, 0.999]}, "target_update_interval": {"randint": [100, 1000]}}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    assert read_space(path) == space


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learning_rat": {"uniform": [0.1, 0.2]}}, "unknown config key 'learning_rat'"),
        ({"device": {"choice": ["cpu", "cuda"]}}, "device cannot be searched"),
        ({"fee": {"uniform": [0.0, 0.01]}}, "fee cannot be searched"),
        ({"seed": {"choice": [1, 2]}}, "use --seeds"),
        ({"gamma": {"normal": [0.9, 0.1]}}, "exactly one of choice, uniform, loguniform, randint"),
        ({"gamma": {"uniform": [0.99, 0.9]}}, "low < high"),
        ({"n_step": {"uniform": [1, 5]}}, "use randint or choice"),
        ({"learning_rate": {"loguniform": [0, 1e-3]}}, "low end > 0"),
        ({"learning_rate": {"choice": [1e-4, 2.0]}}, "learning_rate must be a finite number in (0, 1]"),
        ({"n_step": {"randint": [0, 3]}}, "n_step must be a whole number from 1"),
        ({"model_size": {"choice": []}}, "non-empty list"),
        ([], "expected a JSON object"),
    ],
)
def test_bad_spaces_say_what_is_wrong(space, message):
    with pytest.raises(ConfigError) as caught:
        validate_space(space)
    assert message in str(caught.value)


def test_space_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_space(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_space(broken)


def test_a_cpu_plan_reserves_its_torch_threads():
    plan = TrainingConfig(device="cpu", num_workers=3)
    reservation = plan_reservation(plan, node_cpus=16, node_gpus=0, vram_free_gb=None)
    assert (reservation.cpus, reservation.gpus, reservation.overrides) == (3, 0.0, {})
    # A node lending Ray fewer cores than the plan's threads: the trial runs with what it reserved.
    small = plan_reservation(plan, node_cpus=2, node_gpus=0, vram_free_gb=None)
    assert (small.cpus, small.overrides) == (2, {"num_workers": 2})


def test_gpu_trials_share_a_card_as_far_as_its_memory_allows():
    plan = TrainingConfig(device="cuda", num_workers=8, buffer_size=100_000, use_mixed_precision=True,
                          precision="bf16", optimization_level="max_performance")
    need = gpu_memory_per_trial_gb(plan)
    assert need == pytest.approx(0.5 + 100_000 * (2 * 12 * 4 + 17) / 2**30)
    roomy = plan_reservation(plan, node_cpus=16, node_gpus=1, vram_free_gb=80.0)
    assert (roomy.gpus, roomy.cpus) == (0.25, 4)  # 4 per card (the cap), 16 cores / 4 trials
    tight = plan_reservation(plan, node_cpus=16, node_gpus=1, vram_free_gb=2 * need / 0.9 + 0.01)
    assert tight.gpus == 0.5  # memory for two
    asked = plan_reservation(plan, node_cpus=16, node_gpus=2, vram_free_gb=80.0, trials_per_gpu=8)
    assert (asked.gpus, asked.cpus, asked.overrides["num_workers"]) == (0.125, 1, 1)


def test_a_gpu_plan_on_a_node_without_ray_gpus_runs_on_its_cpu():
    plan = TrainingConfig(device="cuda", num_workers=4, use_mixed_precision=True, precision="bf16")
    reservation = plan_reservation(plan, node_cpus=8, node_gpus=0, vram_free_gb=None)
    assert reservation.gpus == 0.0 and reservation.overrides["device"] == "cpu"


def test_nodes_with_the_same_reservation_form_one_kind_and_cpu_trials_leave_cards_alone():
    from nexlify.distributed.executor import trial_kinds  # imports no Ray

    laptop = TrainingConfig(device="cpu", num_workers=2)
    gpu = TrainingConfig(device="cuda", num_workers=8, use_mixed_precision=True, precision="bf16",
                         buffer_size=10_000)
    nodes = [NodePlan("a", "10.0.0.1", 4, 0, None, laptop), NodePlan("b", "10.0.0.2", 8, 0, None, laptop),
             NodePlan("c", "10.0.0.3", 16, 2, 80.0, gpu)]
    kinds = trial_kinds(nodes)
    assert [(k.slots, k.reservation.cpus, k.reservation.gpus) for k in kinds] == [(8, 2, 0.25), (6, 2, 0.0)]
    assert kinds[1].nodes == ("10.0.0.1", "10.0.0.2")
    assert kinds[1].reservation.overrides["device"] == "cpu"


def test_checks_per_job_counts_the_trainers_validations():
    assert checks_per_job(12, 2) == 6
    assert checks_per_job(5, 2) == 3  # 2, 4 and the end
    assert checks_per_job(6, 0.5) == 12  # twice an episode


def test_the_best_trial_is_the_best_complete_one_on_validation():
    rows = [{"trial": "a", "status": "complete", METRIC: 0.5},
            {"trial": "b", "status": "stopped early (ASHA)", METRIC: 3.0},  # judged on fewer windows
            {"trial": "c", "status": "complete", METRIC: 1.5},
            {"trial": "d", "status": "error", METRIC: None}]
    assert best_trial(rows)["trial"] == "c"
    with pytest.raises(Exception, match="no sweep trial finished"):
        best_trial([rows[1], rows[3]])
    assert math.isfinite(best_trial(rows)[METRIC])


def test_ray_flags_without_ray_installed_say_how_to_install(monkeypatch, capsys):
    import sys

    from nexlify.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where it is not installed
    for argv in (["walkforward", "--ray"], ["sweep", "--space", "space.json", "--trials", "4"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and 'pip install "nexlify[distributed]"' in err and "\n" not in err


def test_a_bad_space_file_is_one_error_line_before_any_work(tmp_path, capsys):
    pytest.importorskip("ray", reason='the sweep checks for Ray first: pip install "nexlify[distributed]"')
    from nexlify.cli import main

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"uniform": [0.1]}}))
    assert main(["sweep", "--space", str(space), "--trials", "2", "--checkpoint-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "learning_rate uniform needs [low, high]" in err
    assert not (tmp_path / "out").exists()


def test_a_job_on_a_node_takes_that_nodes_machine_settings_but_keeps_what_the_user_set():
    from nexlify.distributed.executor import node_machine_settings
    from nexlify.evaluation.walkforward import MACHINE_KEYS
    from nexlify.hardware.profiler import HardwareProfiler

    planned = HardwareProfiler().config.to_dict()
    settings = node_machine_settings({"num_workers": 7, "batch_size": 7, "learning_rate": 1e-4})
    assert set(settings) == set(MACHINE_KEYS) - {"num_workers"}  # the batch is what a job learns with
    assert settings == {key: planned[key] for key in settings}


def test_a_node_without_the_drivers_disk_trains_on_a_shipped_copy_of_the_market(tmp_path):
    from nexlify.distributed.executor import job_files, local_copy_of_data
    from nexlify.evaluation.walkforward import FoldJob

    job = FoldJob(1, "a", "b", "b", "c", "c", "d", market="M", data=str(tmp_path / "elsewhere" / "M.csv"), seed=1)
    copy = local_copy_of_data(job, {job.data: b"timestamp,open\n"})
    assert copy.data != job.data and copy.data.endswith("M.csv")
    assert Path(copy.data).read_bytes() == b"timestamp,open\n"
    here = tmp_path / "M.csv"
    here.write_text("x")
    here_job = FoldJob(1, "a", "b", "b", "c", "c", "d", market="M", data=str(here), seed=1)
    assert local_copy_of_data(here_job, {str(here): b"y"}).data == str(here)
    # A pooled job gets a copy of every market it trains on that this node cannot read.
    away = str(tmp_path / "elsewhere" / "N.csv")
    pooled = FoldJob(1, "a", "b", "b", "c", "c", "d", market="pooled", data=None, seed=1,
                     pool=(("M", str(here)), ("N", away)))
    assert job_files(pooled) == [str(here), away]
    moved = local_copy_of_data(pooled, {str(here): b"y", away: b"n"})
    assert moved.pool[0] == ("M", str(here)) and moved.pool[1][0] == "N" and moved.pool[1][1] != away
    assert Path(moved.pool[1][1]).read_bytes() == b"n" and moved.data is None


def test_a_ray_address_where_nothing_answers_is_one_error_line(capsys):
    import socket

    from nexlify.distributed.cluster import check_reachable

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=f"--ray 127.0.0.1:{port}: nothing answers there"):
        check_reachable(f"127.0.0.1:{port}")
    check_reachable("auto")  # left to Ray


def test_a_sweep_resumes_across_machine_settings_but_not_across_learning_settings(tmp_path):
    from nexlify.distributed.sweep import REQUEST_FILE, SweepSpec, resumes_sweep_in
    from nexlify.evaluation.walkforward import FoldJob

    def spec(**overrides):
        job = FoldJob(1, "a", "b", "b", "c", "c", "d", market="M", data=None, seed=1,
                      config_overrides={"num_workers": 2, "gamma": 0.99, **overrides})
        return SweepSpec({"n_step": {"choice": [1, 3]}}, 4, [job], {}, search_seed=0)

    (tmp_path / REQUEST_FILE).write_text(json.dumps(spec().identity()))
    assert resumes_sweep_in(tmp_path, spec(num_workers=8, device="cuda"))  # another node's plan: same sweep
    with pytest.raises(ConfigError, match="holds a different sweep"):
        resumes_sweep_in(tmp_path, spec(gamma=0.9))
