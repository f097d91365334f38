"""Benchmarks are not tests, but the GPU one cannot run in CI: smoke-test it on the CPU device so it
keeps working until a GPU runs it (quick mode forces the device-resident torch environments)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_workload_script_runs_on_the_cpu_device():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_workload.py"), "--quick", "--device",
                             "cpu", "--data-days", "30"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "transitions/s" in result.stdout
    assert "env backend torch" in result.stdout


def test_ray_gpu_sharing_script_runs_on_the_cpu():
    import pytest

    pytest.importorskip("ray", reason='Ray is not installed: pip install "nexlify[distributed]"')
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ray_gpu_sharing.py"), "--quick", "--device",
                             "cpu", "--shares", "2"], capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("local Ray workers"))
    row = lines[header + 2].split()
    assert row[0] == "2" and float(row[1]) > 0 and row[3] == "1.00x"  # 2 workers; its own baseline
