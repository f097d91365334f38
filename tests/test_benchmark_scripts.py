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
