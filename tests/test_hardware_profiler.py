"""HardwareProfiler: planning from profiles, the per-machine benchmark cache, rendering, real timing."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nexlify.config import MODEL_SIZES, TrainingConfig
from nexlify.hardware.detect import Gpu, GpuDevice, Profile
from nexlify.hardware.measure import measure
from nexlify.hardware.measurements import LoopRate, Measurements, RunCosts
from nexlify.hardware.plan import GPU_BATCH_SIZES, REPLAY_RATIO, plan_training
from nexlify.hardware.profiler import (
    HardwareProfiler,
    detect_remembering_gpu,
    hardware_fingerprint,
    print_profile,
)
from nexlify.hardware.projection import VALIDATION_STEPS, projected_train_seconds
from test_hardware_detect import FakeNvml, fake_torch, props

EXAMPLE3 = {"cpu": {"physical_cores": 8, "logical_cores": 16},
            "ram": {"total_gb": 32, "available_gb": 24},
            "gpu": {"available": True, "devices": [{"vendor": "NVIDIA", "name": "NVIDIA GeForce RTX 3080",
                                                     "vram_gb": 10, "compute_capability": [8, 6]}]}}


class FakeMachine:
    """Detection and benchmark stand-ins: counts benchmark runs, lets tests change free RAM."""

    def __init__(self) -> None:
        self.available_gb = 20.0
        self.bench_calls = 0

    def detect(self, output_dir: Any) -> Profile:
        return Profile.from_dict({
            "cpu": {"brand": "Fake CPU", "physical_cores": 2, "logical_cores": 2, "usable_cores": 2},
            "ram": {"total_gb": 24.0, "available_gb": self.available_gb},
            "gpu": {"available": False, "backend": None, "devices": []},
            "storage": {"path": str(output_dir), "free_gb": 100.0, "total_gb": 200.0, "kind": "ssd"},
            "environment": {"torch": "2.13.0+cpu"},
        })

    def benchmark(self, profile: Profile) -> Measurements:
        self.bench_calls += 1
        return Measurements((LoopRate("cpu", "tiny", 256, 2, 32, 14_000.0),
                             LoopRate("cpu", "medium", 256, 2, 32, 12_000.0)), 0.3)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("NEXLIFY_CACHE_DIR", str(d))
    return d


def test_from_profile_plans_without_detecting() -> None:
    prof = HardwareProfiler.from_profile(copy.deepcopy(EXAMPLE3))
    assert isinstance(prof.config, TrainingConfig)
    assert prof.optimal_config == prof.config.to_dict()
    assert prof.optimal_config["model_size"] == "large" and prof.optimal_config["batch_size"] == 256
    assert set(prof.profile) >= {"cpu", "ram", "gpu", "storage", "benchmarks", "environment"}
    lines = prof.explain()
    assert len(lines) == len(prof.decisions)
    assert all(line.startswith(f"{d.key} ") and d.reason in line for line, d in zip(lines, prof.decisions,
                                                                                  strict=True))
    data = json.loads(prof.to_json())
    assert data["plan"] == prof.optimal_config and data["reasons"] == lines
    assert TrainingConfig.from_dict(data["plan"]) == prof.config


def test_cache_hit_is_fast_and_refreshes_volatile_bits(cache_dir: Path, tmp_path: Path) -> None:
    fake = FakeMachine()
    first = HardwareProfiler(tmp_path, detect=fake.detect, benchmark=fake.benchmark)
    assert fake.bench_calls == 1 and not first.cache_hit
    assert first.cache_path is not None and first.cache_path.parent == cache_dir and first.cache_path.exists()
    assert first.config.model_size == "medium"  # planned from the measured throughput

    fake.available_gb = 3.0  # someone opened a browser: free RAM is volatile, not cached
    second = HardwareProfiler(tmp_path, detect=fake.detect, benchmark=fake.benchmark)
    assert second.cache_hit and fake.bench_calls == 1
    assert second.profile["ram"]["available_gb"] == 3.0
    assert second.profile["benchmarks"] == first.profile["benchmarks"]
    assert second.config.buffer_size < first.config.buffer_size

    third = HardwareProfiler(tmp_path, reprofile=True, detect=fake.detect, benchmark=fake.benchmark)
    assert fake.bench_calls == 2 and not third.cache_hit


def test_new_hardware_misses_cache(cache_dir: Path, tmp_path: Path) -> None:
    fake = FakeMachine()
    HardwareProfiler(tmp_path, detect=fake.detect, benchmark=fake.benchmark)
    base = fake.detect(tmp_path)
    changed = replace(base, gpu=Gpu("cuda", (GpuDevice.create("NVIDIA", "NVIDIA GeForce RTX 3080", 10),)))
    assert hardware_fingerprint(base) != hardware_fingerprint(changed)
    volatile = replace(base, ram=replace(base.ram, available_gb=1.0), storage=replace(base.storage, free_gb=1.0))
    assert hardware_fingerprint(base) == hardware_fingerprint(volatile)


def test_corrupt_cache_and_no_benchmark_runs(cache_dir: Path, tmp_path: Path) -> None:
    fake = FakeMachine()
    quick = HardwareProfiler(tmp_path, run_benchmarks=False, detect=fake.detect, benchmark=fake.benchmark)
    assert fake.bench_calls == 0 and quick.profile["benchmarks"] == {}
    assert quick.cache_path is not None and not quick.cache_path.exists()  # nothing cached unmeasured
    assert quick.config.model_size == "small"  # tier rules: 2 cores, no measurements

    quick.cache_path.parent.mkdir(parents=True)
    quick.cache_path.write_text("{not json")
    again = HardwareProfiler(tmp_path, detect=fake.detect, benchmark=fake.benchmark)
    assert fake.bench_calls == 1 and not again.cache_hit
    assert json.loads(again.cache_path.read_text())["benchmarks"]


def test_use_cache_false_never_writes(cache_dir: Path, tmp_path: Path) -> None:
    fake = FakeMachine()
    HardwareProfiler(tmp_path, use_cache=False, detect=fake.detect, benchmark=fake.benchmark)
    HardwareProfiler(tmp_path, use_cache=False, detect=fake.detect, benchmark=fake.benchmark)
    assert fake.bench_calls == 2 and not cache_dir.exists()


def test_save_and_print_profile(cache_dir: Path, tmp_path: Path) -> None:
    fake = FakeMachine()
    prof = HardwareProfiler(tmp_path / "out", detect=fake.detect, benchmark=fake.benchmark)
    path = prof.save()
    assert path == tmp_path / "out" / "hardware_profile.json"
    saved = json.loads(path.read_text())
    assert saved["plan"]["model_size"] == "medium"
    assert saved["reasons"] == prof.explain()
    console = Console(record=True, width=220, file=io.StringIO())
    print_profile(prof, console)
    text = console.export_text()
    assert "Detected hardware" in text and "Training plan" in text and "Fake CPU" in text
    for d in prof.decisions:
        assert d.key in text


def test_print_profile_shows_unusable_gpu() -> None:
    profile = copy.deepcopy(EXAMPLE3)
    profile["gpu"] = {"available": False, "unusable_devices": [
        {"name": "NVIDIA GeForce RTX 3080", "reason": "torch is a CPU-only build; install a CUDA build"}]}
    console = Console(record=True, width=220, file=io.StringIO())
    print_profile(HardwareProfiler.from_profile(profile), console)
    assert "CPU-only build" in console.export_text()


def test_real_machine_cold_and_cached_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one real-machine test: a cold profile times the real loop, a second one reads the cache.
    (How long a profile takes is measured by benchmarks/profiler_speed.py, not asserted here.)"""
    monkeypatch.setenv("NEXLIFY_CACHE_DIR", str(tmp_path / "cache"))
    cold = HardwareProfiler(tmp_path / "out", benchmark_budget_s=0.5)
    warm = HardwareProfiler(tmp_path / "out")
    assert not cold.cache_hit and warm.cache_hit
    rates = cold.hardware.benchmarks.rates
    assert rates and all(r.device == "cpu" and r.transitions_per_s > 0 for r in rates)
    assert warm.hardware.benchmarks == cold.hardware.benchmarks and warm.config == cold.config
    assert cold.config.num_workers <= cold.hardware.cpu.usable_cores
    assert cold.to_dict()["projected_train_seconds"] == cold.projected_train_seconds
    # The planned model's run costs beside the loop, timed on the real agent.
    costs = cold.hardware.benchmarks.run_costs
    assert costs is not None and (costs.device, costs.model_size) == ("cpu", cold.config.model_size)
    assert costs.validation_steps == VALIDATION_STEPS and costs.validation_s > 0 and costs.checkpoint_s > 0
    projection = cold.to_dict()["projection"]
    assert projection["validations"] == 100 and projection["checkpoints"] == 20  # 1000 episodes, every 10 / 50
    assert projection["validation_s"] == pytest.approx(100 * costs.validation_s, abs=1e-3)
    json.dumps(cold.to_dict())
    assert not (tmp_path / "out").exists()


class ExplodingTorch:
    """A torch stand-in that fails the test if detection touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"torch.{name} was used although the GPU detection was remembered")


def test_gpu_detection_is_remembered_so_a_cached_profile_needs_no_torch(tmp_path: Path) -> None:
    cards = [["NVIDIA GeForce RTX 4090", 24, 20, (8, 9), "GPU-b"]]
    nvml = FakeNvml(cards)
    torch = fake_torch([props("NVIDIA GeForce RTX 4090", 23.6, (8, 9), uuid="b")])
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    first = detect_remembering_gpu(tmp_path, tmp_path / "cache", torch_module=torch, nvml=nvml, environ=env)
    assert first.gpu.available and first.gpu.primary.vram_free_gb == 20
    cards[0][2] = 7  # another process took VRAM meanwhile
    again = detect_remembering_gpu(tmp_path, tmp_path / "cache", torch_module=ExplodingTorch(), nvml=nvml,
                                   environ=env)
    assert again.gpu.primary.name == "NVIDIA GeForce RTX 4090" and again.gpu.primary.vram_free_gb == 7
    assert again.gpu == replace(first.gpu, devices=(replace(first.gpu.primary, vram_free_gb=7),))
    # Other visible devices, or --reprofile, ask torch again.
    with pytest.raises(AssertionError, match="torch"):
        detect_remembering_gpu(tmp_path, tmp_path / "cache", torch_module=ExplodingTorch(), nvml=nvml,
                               environ={"CUDA_VISIBLE_DEVICES": "1"})
    with pytest.raises(AssertionError, match="torch"):
        detect_remembering_gpu(tmp_path, tmp_path / "cache", refresh=True, torch_module=ExplodingTorch(),
                               nvml=nvml, environ=env)


# --- measure: which settings are timed (fake bursts; the real one is timed above) -------------------------
class FakeBursts:
    """Stands in for the real loop: a table of transitions/s, and a log of what was timed."""

    def __init__(self, speed: Callable[[TrainingConfig], float], seconds: float = 0.0) -> None:
        self.speed, self.seconds, self.calls = speed, seconds, []

    def __call__(self, config: TrainingConfig, budget_s: float) -> float:
        self.calls.append((config.device, config.model_size, config.batch_size, config.num_workers,
                           config.parallel_envs))
        time.sleep(self.seconds)
        return self.speed(config)


def test_measure_times_each_cpu_model_batch_and_thread_count_and_plans_from_it() -> None:
    # The 2-core Xeon: 2 threads run the real loop about 4x slower than 1.
    bursts = FakeBursts(lambda c: (12_000.0 if c.num_workers == 1 else 3_000.0) / (MODEL_SIZES.index(c.model_size) + 1))
    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 24}})
    measured = measure(profile, budget_s=60, time_burst=bursts)
    assert {c[1] for c in bursts.calls} == {"tiny", "small", "medium", "large"}  # the RAM tier's models
    assert {(c[2], c[3]) for c in bursts.calls} == {(64, 1), (256, 1), (64, 2)}
    # Every model and batch at 1 thread, then the provisional plan (small, batch 64) at each thread count.
    assert {c[1:4] for c in bursts.calls if c[3] == 2} == {("small", 64, 2)}
    assert all(c[4] == min(64, max(16, c[2] // REPLAY_RATIO)) for c in bursts.calls)  # the planner's envs
    cfg, _ = plan_training(replace(profile, benchmarks=measured))
    assert cfg.num_workers == 1 and cfg.model_size == "small"  # 6,000/s: 500 s fits 600 s; medium's 4,000 not
    assert projected_train_seconds(measured, cfg) == pytest.approx(1000 * 3000 / 6_000)


def test_a_thread_count_far_behind_is_timed_once_and_a_close_one_every_round() -> None:
    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 24}})
    far = FakeBursts(lambda c: c.batch_size * (50.0 if c.num_workers == 1 else 12.5))  # 2 threads at 25%: foregone
    measure(profile, budget_s=60, time_burst=far)
    assert [c[3] for c in far.calls if c[1:3] == ("large", 256)] == [1, 1, 2, 1, 1]  # survey, then 1,2 / 1 / 1
    close = FakeBursts(lambda c: c.batch_size * (50.0 if c.num_workers == 1 else 37.5))  # 75%: worth more samples
    measure(profile, budget_s=60, time_burst=close)
    assert [c[3] for c in close.calls if c[1:3] == ("large", 256)] == [1, 1, 2, 1, 2, 1, 2]


def test_larger_models_are_measured_only_at_the_batch_that_won_for_the_smaller() -> None:
    bursts = FakeBursts(lambda c: c.batch_size * 100.0 / (MODEL_SIZES.index(c.model_size) + 1))
    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 24}})
    measure(profile, budget_s=60, time_burst=bursts)
    assert {c[1:3] for c in bursts.calls if c[1] == "tiny"} == {("tiny", 64), ("tiny", 256)}
    assert {c[1:3] for c in bursts.calls if c[1] != "tiny"} == {("small", 256), ("medium", 256), ("large", 256)}


def test_measure_times_the_run_costs_of_the_plan_it_measured() -> None:
    bursts = FakeBursts(lambda c: (12_000.0 if c.num_workers == 1 else 3_000.0) / (MODEL_SIZES.index(c.model_size) + 1))
    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 24}})
    asked: list[TrainingConfig] = []

    def costs(planned: TrainingConfig) -> RunCosts:
        asked.append(planned)
        return RunCosts("cpu", planned.model_size, 0.1, VALIDATION_STEPS, 0.02, 1e-6, 0.5)

    measured = measure(profile, budget_s=60, time_burst=bursts, time_costs=costs)
    cfg, _ = plan_training(replace(profile, benchmarks=measured))
    assert [(c.model_size, c.batch_size, c.num_workers, c.parallel_envs) for c in asked] == \
        [(cfg.model_size, cfg.batch_size, cfg.num_workers, cfg.parallel_envs)]  # once, the final plan
    assert measured.run_costs == costs(cfg)
    # 500 s of loop (see above), 100 validations of 0.1 s, 20 checkpoints, 0.5 s start-up.
    checkpoints = 20 * 0.02 + sum(min(cfg.buffer_size, k * 50 * 3000) for k in range(1, 21)) * 1e-6
    assert projected_train_seconds(measured, cfg) == pytest.approx(500 + 10 + checkpoints + 0.5)

    def broken(planned: TrainingConfig) -> RunCosts:
        raise OSError("disk full")

    failed = measure(profile, budget_s=60, time_burst=bursts, time_costs=broken)
    assert failed.run_costs is None and any("disk full" in e for e in failed.errors)
    assert projected_train_seconds(failed, cfg) == pytest.approx(500)  # the loop alone: the plan stands


def test_measure_drops_hopeless_larger_models_and_stops_at_the_budget() -> None:
    slow = FakeBursts(lambda c: 100.0)  # 3M transitions at 100/s: 30,000 s, far over 4 x 600 s
    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 64}})
    measured = measure(profile, budget_s=60, time_burst=slow)
    assert {c[1] for c in slow.calls} == {"tiny"} and not measured.incomplete
    late = FakeBursts(lambda c: 1e9, seconds=0.02)
    measured = measure(profile, budget_s=0.05, time_burst=late)
    assert measured.incomplete and len(late.calls) < 8
    assert {r.threads for r in measured.rates} == {1, 2}  # the thread counts are timed even out of time


def test_measure_on_a_gpu_times_the_planned_model_at_every_gpu_batch_even_out_of_time() -> None:
    bursts = FakeBursts(lambda c: 1e6, seconds=0.01)
    profile = Profile.from_dict({
        "cpu": {"usable_cores": 16, "physical_cores": 16, "logical_cores": 32},
        "ram": {"total_gb": 128, "available_gb": 120},
        "gpu": {"available": True, "backend": "cuda",
                "devices": [{"vendor": "NVIDIA", "name": "NVIDIA H100 80GB HBM3", "vram_gb": 80,
                             "compute_capability": [9, 0]}]}})
    measured = measure(profile, budget_s=0.0, time_burst=bursts)
    assert [c[:4] for c in bursts.calls] == [("cuda", "xlarge", b, 8) for b in GPU_BATCH_SIZES]
    assert [r.batch_size for r in measured.rates] == list(GPU_BATCH_SIZES)


def test_bursts_run_the_precision_and_optimization_level_the_plan_gives_the_device() -> None:
    seen: set[tuple[str, str, bool]] = set()

    def bursts(config: TrainingConfig, budget_s: float) -> float:
        seen.add((config.precision, config.optimization_level, config.use_mixed_precision))
        return 1e6

    h100 = Profile.from_dict({
        "cpu": {"usable_cores": 16, "physical_cores": 16, "logical_cores": 32},
        "ram": {"total_gb": 128, "available_gb": 120},
        "gpu": {"available": True, "backend": "cuda",
                "devices": [{"vendor": "NVIDIA", "name": "NVIDIA H100 80GB HBM3", "vram_gb": 80,
                             "compute_capability": [9, 0], "bf16": True, "tensor_cores": True}]}})
    measured = measure(h100, budget_s=0.0, time_burst=bursts)
    planned, _ = plan_training(replace(h100, benchmarks=measured))
    assert seen == {(planned.precision, planned.optimization_level, True)} == {("bf16", "max_performance", True)}
    seen.clear()
    laptop = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 8}})
    measure(laptop, budget_s=0.0, time_burst=bursts)
    assert seen == {("fp32", "cpu_optimize", False)}


def test_a_failing_burst_is_reported_and_the_rest_still_plans() -> None:
    def flaky(config: TrainingConfig, budget_s: float) -> float:
        if config.num_workers == 2:
            raise RuntimeError("boom")
        return 9_000.0

    profile = Profile.from_dict({"cpu": {"physical_cores": 2, "logical_cores": 2}, "ram": {"total_gb": 8}})
    measured = measure(profile, budget_s=60, time_burst=flaky)
    assert measured.errors and "boom" in measured.errors[0]
    assert {r.threads for r in measured.rates} == {1}
    assert plan_training(replace(profile, benchmarks=measured))[0].num_workers == 1


def test_old_cache_layout_reads_as_unmeasured() -> None:
    old = {"threads": 2, "update_throughput": {"cpu": {"tiny": {"256": 140_000.0}}}}
    assert not Measurements.from_dict(old)
    fresh = Measurements((LoopRate("cpu", "tiny", 256, 1, 32, 1.5),), 0.1)
    assert Measurements.from_dict(json.loads(json.dumps(fresh.to_dict()))) == fresh


def test_per_step_seconds_mean_on_the_cpu_and_fastest_rounds_on_a_gpu() -> None:
    from nexlify.hardware.measure import _per_step_seconds

    short, long = [0.010, 0.030], [0.050, 0.110]  # one hiccup in each length
    # CPU: mean difference ((0.16 - 0.04) / 2 pairs / 4 steps); GPU: fastest of each length ((0.05 - 0.01) / 4).
    assert _per_step_seconds(short, long, 4, gpu=False) == pytest.approx(0.015)
    assert _per_step_seconds(short, long, 4, gpu=True) == pytest.approx(0.010)
    # Noise larger than the loop: whole rounds instead (mean on the CPU, fastest on a GPU), never <= 0.
    assert _per_step_seconds([0.06, 0.08], [0.05, 0.07], 4, gpu=False) == pytest.approx(0.06 / 5)
    assert _per_step_seconds([0.06], [0.05], 4, gpu=True) == pytest.approx(0.05 / 5)


def test_gpu_bursts_are_longer_than_cpu_bursts() -> None:
    from nexlify.hardware.measure import BURST_STEPS, GPU_BURST_STEPS, burst_steps

    assert burst_steps("cpu") == BURST_STEPS
    assert burst_steps("cuda") == burst_steps("cuda:1") == burst_steps("mps") == GPU_BURST_STEPS > BURST_STEPS


def test_checkpoint_cost_per_row_holds_when_the_bursts_filled_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bursts can fill the replay almost to capacity; the cost per replay row must still come from
    a checkpoint without replay against one with the whole replay, not from the few rows added."""
    from nexlify.hardware.measure import BURST_BUFFER, LoopTimer, _fill_replay, burst_config

    def fake_save(agent: Any, path: Path, include_replay: bool) -> float:
        return 0.1 + (len(agent.replay) * 1e-5 if include_replay else 0.0)  # 0.1 s plus 10 us a row

    monkeypatch.setattr(LoopTimer, "_time_save", staticmethod(fake_save))
    planned = TrainingConfig(model_size="tiny", batch_size=64, parallel_envs=8, num_workers=1)
    with LoopTimer() as timer:
        trainer = timer._trainer(burst_config("cpu", "tiny", 64, 1, 8))
        _fill_replay(trainer.agent.replay)  # full before the run costs are timed
        assert len(trainer.agent.replay) == BURST_BUFFER
        costs = timer.run_costs(planned)
    assert costs.checkpoint_s == pytest.approx(0.1)
    assert costs.checkpoint_s_per_transition == pytest.approx(1e-5)


def test_a_gpu_setting_is_timed_in_pairs_even_out_of_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU a fresh setting past the deadline is still timed in pairs of warm rounds (for at least
    GPU_MIN_TIMING_S), never judged by its first round, whose allocations and kernel loads would
    make a fast batch look slow. The CPU plays the GPU here: same code path, no CUDA calls."""
    from nexlify.hardware import measure

    synced: list[str] = []
    monkeypatch.setattr(measure, "device_kind", lambda device: "cuda")
    monkeypatch.setattr(measure, "synchronize", synced.append)
    monkeypatch.setattr(measure, "GPU_WARM_S", 0.0)
    monkeypatch.setattr(measure, "GPU_MIN_TIMING_S", 0.05)
    config = measure.burst_config("cpu", "tiny", 64, 1, 8)
    with measure.LoopTimer() as timer:
        rate = timer(config, 0.0)  # out of time before it starts
        rounds = timer._round_s[timer._key(config)]  # the pairs' long rounds (absent: no pairs timed)
    assert len(rounds) >= 1 and rate > 0
    # Every round waits for the device before and after: the warm-up round, then each pair's two.
    assert synced.count("cpu") == 2 * (1 + 2 * len(rounds))
    assert measure.burst_steps("cpu") == measure.GPU_BURST_STEPS  # GPU-length rounds through the patched kind


def test_a_hopeless_cpu_setting_is_judged_by_its_warm_up_round() -> None:
    from nexlify.hardware import measure

    config = measure.burst_config("cpu", "tiny", 64, 1, 8)
    with measure.LoopTimer() as timer:
        rate = timer(config, 0.0)
        assert timer._round_s.get(timer._key(config)) is None  # no pairs: the warm-up round alone
        assert rate == pytest.approx(8 * (1 + measure.BURST_STEPS) / timer._warm_up_s[timer._key(config)])
