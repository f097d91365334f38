"""``HardwareProfiler``: detect, measure (cached per machine), plan, explain.

Detection is cheap (tens of milliseconds) and always fresh, so free RAM, free VRAM and free disk are
never stale. Measurements (bursts of the real training loop and the run costs, ~1.5 s) are cached as JSON per hardware
fingerprint (CPU brand and cores, RAM total, GPU names, torch version; never free memory) under
``$NEXLIFY_CACHE_DIR`` or ``~/.cache/nexlify``. ``reprofile=True`` measures again and rewrites the
cache. Torch's view of the GPUs is remembered there too (``detect_remembering_gpu``), so a cached
profile never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.hardware.detect import Gpu, Profile, detect_all
from nexlify.hardware.gpu import gpu_detection_key, nvml_cards, refresh_free_vram
from nexlify.hardware.measurements import MEASURE_BUDGET_S, Measurements
from nexlify.hardware.plan import Decision, plan_training
from nexlify.hardware.projection import STEPS_PER_EPISODE, project_run
from nexlify.io import default_cache_dir, write_text_atomic

# Bump when the measurements change meaning, so old caches are ignored (2: GPU batch sizes, planned GPU
# model first; 3: bursts of the real training loop instead of a bare update benchmark; 4: run costs
# beside the loop).
CACHE_VERSION = 4
PROFILE_FILENAME = "hardware_profile.json"


def hardware_fingerprint(profile: Profile) -> str:
    """Short hash of what makes benchmark numbers comparable (nothing volatile like free RAM)."""
    cpu = profile.cpu
    key = {
        "v": CACHE_VERSION,
        "cpu": [cpu.brand, cpu.physical_cores, cpu.logical_cores, cpu.usable_cores],
        "ram_total_gb": round(profile.ram.total_gb, 1),
        "gpus": [[d.name, round(d.vram_gb, 1)] for d in profile.gpu.devices],
        "backend": profile.gpu.backend,
        "torch": profile.environment.torch,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def detect_remembering_gpu(output_dir: str | Path, cache_dir: Path, refresh: bool = False,
                           torch_module: Any = "auto", nvml: Any = "auto",
                           environ: dict[str, str] | None = None) -> Profile:
    """``detect_all``, with torch's view of the GPUs remembered per ``gpu_detection_key``.

    Importing torch takes seconds, longer than everything else a cached profile does; the GPU
    section depends only on what the key covers, so a remembered one is reused (free VRAM read again
    from NVML) and torch is imported only when the key is new or ``refresh`` is set.
    """
    cards = nvml_cards(nvml)
    memo_path = cache_dir / f"gpu_detection_{gpu_detection_key(cards, environ)}.json"
    remembered = None if refresh else _load_json(memo_path)
    if remembered is not None and isinstance(remembered.get("devices"), list):
        return detect_all(output_dir, gpu=refresh_free_vram(Gpu.from_dict(remembered), cards))
    detected = detect_all(output_dir, torch_module=torch_module, nvml=nvml)
    with contextlib.suppress(OSError):  # a read-only home only costs the torch import next time
        write_text_atomic(memo_path, json.dumps(detected.gpu.to_dict(), indent=2))
    return detected


def _load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when missing or corrupt (then we measure again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class HardwareProfiler:
    """Detects this machine, benchmarks it (cached) and plans the training configuration.

    ``hardware`` (the typed ``Profile``), ``profile`` (its dict: cpu, ram, gpu, storage, benchmarks,
    environment, meta), ``config`` (TrainingConfig), ``optimal_config`` (its dict), ``decisions`` and
    ``explain()`` hold the result. ``detect``/``benchmark`` may be replaced (tests); they default to
    the real probes.
    """

    def __init__(self, output_dir: str | Path = ".", use_cache: bool = True, reprofile: bool = False,
                 run_benchmarks: bool = True, *, cache_dir: str | Path | None = None,
                 benchmark_budget_s: float = MEASURE_BUDGET_S,
                 detect: Callable[[Path], Profile] | None = None,
                 benchmark: Callable[[Profile], Measurements] | None = None) -> None:
        start = time.perf_counter()
        self.output_dir = Path(output_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if detect is not None:
            detected = detect(self.output_dir)
        elif use_cache:
            detected = detect_remembering_gpu(self.output_dir, self.cache_dir, refresh=reprofile)
        else:
            detected = detect_all(self.output_dir)
        detect_s = time.perf_counter() - start
        fingerprint = hardware_fingerprint(detected)
        self.cache_path: Path | None = self.cache_dir / f"hardware_profile_{fingerprint}.json"
        self.cache_hit = False

        benchmarks = Measurements()
        if use_cache and not reprofile:
            benchmarks = Measurements.from_dict((_load_json(self.cache_path) or {}).get("benchmarks"))
            self.cache_hit = bool(benchmarks)
        measured = False
        if not self.cache_hit and run_benchmarks:
            from nexlify.hardware.measure import measure  # imports torch and the trainer: only when measuring

            benchmarks = (benchmark or (lambda prof: measure(prof, budget_s=benchmark_budget_s)))(detected)
            measured = True

        meta = {
            "fingerprint": fingerprint,
            "cache_hit": self.cache_hit,
            "cache_path": str(self.cache_path),
            "detect_s": round(detect_s, 3),
            "profile_s": round(time.perf_counter() - start, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.hardware = replace(detected, benchmarks=benchmarks, meta=meta)
        if use_cache and measured and benchmarks:
            # Only measured profiles are cached, so a run without benchmarks never blocks later ones.
            # A read-only home must not stop training; we simply measure again next time.
            with contextlib.suppress(OSError):
                write_text_atomic(self.cache_path, json.dumps(self.profile, indent=2))
        self._plan()

    # --- construction without detection ----------------------------------------------------
    @classmethod
    def from_profile(cls, profile: Profile | dict[str, Any]) -> HardwareProfiler:
        """Plan for a given (possibly partial) profile without detecting or measuring anything."""
        self = cls.__new__(cls)
        self.output_dir = Path(".")
        self.cache_dir = default_cache_dir()
        self.cache_path = None
        self.cache_hit = False
        self.hardware = profile if isinstance(profile, Profile) else Profile.from_dict(profile)
        self._plan()
        return self

    def _plan(self) -> None:
        self.config: TrainingConfig
        self.decisions: list[Decision]
        self.config, self.decisions = plan_training(self.hardware)

    @property
    def profile(self) -> dict[str, Any]:
        """The profile as the plain dict users read (``profiler.profile['cpu']``) and JSON holds."""
        return self.hardware.to_dict()

    # --- results ---------------------------------------------------------------------------
    @property
    def optimal_config(self) -> dict[str, Any]:
        """The plan as a plain dict (the guide's ``optimal_config``)."""
        return self.config.to_dict()

    @property
    def projected_train_seconds(self) -> float | None:
        """The planned run's training time: its loop at the measured speed of its setting, plus its
        validations, checkpoints and start-up as measured (None unmeasured)."""
        projection = project_run(self.hardware.benchmarks, self.config)
        return None if projection is None else round(projection.total_s, 1)

    def explain(self) -> list[str]:
        """One line per planned key: ``key value: reason``."""
        return [str(d) for d in self.decisions]

    def to_dict(self) -> dict[str, Any]:
        """Profile, plan and one reason per decision (JSON-serialisable); the layout of
        ``hardware_profile.json`` (the trainer adds the overrides it applied)."""
        projection = project_run(self.hardware.benchmarks, self.config)
        return {"profile": self.profile, "plan": self.optimal_config, "reasons": self.explain(),
                "projected_train_seconds": self.projected_train_seconds,
                "projected_transitions_per_s": None if projection is None else projection.transitions_per_s,
                "projection": None if projection is None else projection.to_dict()}

    def to_json(self) -> str:
        """``to_dict`` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path | None = None) -> Path:
        """Write ``to_json`` atomically (default: ``output_dir/hardware_profile.json``)."""
        target = Path(path) if path is not None else self.output_dir / PROFILE_FILENAME
        write_text_atomic(target, self.to_json())
        return target


# ---------------------------------------------------------------------------------------------
# rich rendering (the CLI's `nexlify profile`)
# ---------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_profile(profiler: HardwareProfiler) -> list[Any]:
    """Rich tables: detected hardware, benchmarks, and the plan with its reasons."""
    from rich.table import Table

    p = profiler.profile
    cpu, ram, gpu = p.get("cpu") or {}, p.get("ram") or {}, p.get("gpu") or {}
    storage, env = p.get("storage") or {}, p.get("environment") or {}

    hw = Table(title="Detected hardware", show_header=True, header_style="bold")
    hw.add_column("Component", style="cyan")
    hw.add_column("Details")
    simd = ", ".join(k for k, v in (cpu.get("simd") or {}).items() if v) or "-"
    hw.add_row("CPU", f"{cpu.get('brand', '?')} ({cpu.get('architecture', '?')}); "
               f"{_fmt(cpu.get('physical_cores'))} physical / {_fmt(cpu.get('logical_cores'))} logical, "
               f"{_fmt(cpu.get('usable_cores'))} usable; max {_fmt(cpu.get('max_freq_mhz'))} MHz; "
               f"SIMD {simd}")
    limit = f", cgroup limit {_fmt(ram.get('limit_gb'))} GB" if ram.get("limit_gb") else ""
    hw.add_row("RAM", f"{_fmt(ram.get('total_gb'))} GB total, "
               f"{_fmt(ram.get('available_gb'))} GB available{limit}")
    for i, d in enumerate(gpu.get("devices") or []):
        cc = d.get("compute_capability")
        hw.add_row(f"GPU {i}", f"{d.get('name')} ({gpu.get('backend')}): {_fmt(d.get('vram_gb'))} GB, "
                   f"{_fmt(d.get('vram_free_gb'))} GB free; CC {'.'.join(map(str, cc)) if cc else '-'}; "
                   f"tensor cores {_fmt(d.get('tensor_cores'))}; bf16 {_fmt(d.get('bf16'))}")
    for d in gpu.get("unusable_devices") or []:
        hw.add_row("GPU (unusable)", f"[yellow]{d.get('name')}: {d.get('reason')}[/yellow]")
    if not gpu.get("devices") and not gpu.get("unusable_devices"):
        hw.add_row("GPU", "none")
    hw.add_row("Storage", f"{storage.get('kind', 'unknown')} ({storage.get('fstype') or '?'}) at "
               f"{storage.get('path', '?')}: {_fmt(storage.get('free_gb'))} GB free of "
               f"{_fmt(storage.get('total_gb'))} GB")
    flags = [k for k in ("colab", "kaggle", "container", "wsl", "on_battery") if env.get(k)]
    hw.add_row("Environment", f"{env.get('os', '?')}, Python {env.get('python', '?')}, torch "
               f"{env.get('torch', '?')}" + (f"; {', '.join(flags)}" if flags else ""))

    tables: list[Any] = [hw]
    measured = profiler.hardware.benchmarks
    if measured:
        bt = Table(title="Real training loop, measured" + (" (cached)" if (p.get("meta") or {}).get("cache_hit")
                                                            else f" in {_fmt(measured.duration_s)} s"),
                   header_style="bold")
        for name in ("device", "model", "batch", "parallel envs", "torch threads"):
            bt.add_column(name, style="cyan")
        bt.add_column("transitions/s", justify="right")
        for r in measured.rates:
            bt.add_row(r.device, r.model_size, _fmt(r.batch_size), _fmt(r.parallel_envs), _fmt(r.threads),
                       _fmt(r.transitions_per_s))
        tables.append(bt)

    plan = Table(title="Training plan", header_style="bold")
    plan.add_column("Setting", style="cyan")
    plan.add_column("Value", style="green")
    plan.add_column("Why")
    for d in profiler.decisions:
        plan.add_row(d.key, _fmt(d.value), d.reason)
    projection = project_run(profiler.hardware.benchmarks, profiler.config)
    if projection is not None:
        plan.add_row("projected_train_seconds", _fmt(round(projection.total_s, 1)),
                     f"{profiler.config.episodes:,} episodes of {STEPS_PER_EPISODE:,} steps at the measured speed "
                     f"of this setting ({projection.loop_s:,.0f} s), {projection.validations} validations "
                     f"({projection.validation_s:,.1f} s), {projection.checkpoints} checkpoints "
                     f"({projection.checkpoint_s:,.1f} s) and start-up ({projection.startup_s:,.1f} s) as measured")
    tables.append(plan)
    return tables


def print_profile(profiler: HardwareProfiler, console: Any = None) -> None:
    """Print ``render_profile`` to a rich console (a new one when not given)."""
    if console is None:
        from rich.console import Console

        console = Console()
    for table in render_profile(profiler):
        console.print(table)
