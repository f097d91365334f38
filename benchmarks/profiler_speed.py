"""Hardware profiler time: cold (measure everything) and cached, each in a fresh process.

Run: ./run bench profiler_speed
Prints the median of 3 fresh processes for each: the HardwareProfiler() call alone with torch already
imported (as inside `nexlify train`; a cold one includes the first optimizer's one-off import of
torch._dynamo, which training pays anyway), the real-loop bursts inside it (their time budget), and
the whole `nexlify profile` command (Python start-up, imports, detection, printing the tables). A
cached profile remembers the GPU detection, so it imports no torch. The floor under any cold
profile: a fresh `python -c "import torch"`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from nexlify.hardware.measurements import MEASURE_BUDGET_S  # noqa: E402

PROBE = """
import json, time
import torch  # imported first so the profiler's own time is measured apart from it
from nexlify.hardware.profiler import HardwareProfiler
started = time.perf_counter()
profiler = HardwareProfiler(reprofile={reprofile})
print(json.dumps({{"profiler_s": time.perf_counter() - started,
                  "bursts_s": profiler.hardware.benchmarks.duration_s if {reprofile} else 0.0}}))
"""


def run(reprofile: bool, cache_dir: str) -> tuple[float, float, float]:
    env = {**os.environ, "NEXLIFY_CACHE_DIR": cache_dir}
    result = subprocess.run([sys.executable, "-c", PROBE.format(reprofile=reprofile)], capture_output=True,
                            text=True, check=True, env=env)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    command = [sys.executable, "-m", "nexlify.cli", "profile"] + (["--reprofile"] if reprofile else [])
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=env)
    return probe["profiler_s"], probe["bursts_s"], time.perf_counter() - started


def import_torch_s() -> float:
    """Seconds of a fresh process that only imports torch."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def main() -> None:
    print(f"Machine: {machine()}\n")
    print(f"Floor: a process that only imports torch: {statistics.median(import_torch_s() for _ in range(3)):.2f} s")
    with tempfile.TemporaryDirectory() as cache_dir:
        rows = []
        for name, reprofile in (("cold (--reprofile)", True), ("cached", False)):
            runs = [run(reprofile, cache_dir) for _ in range(3)]
            rows.append([name, *(f"{statistics.median(r[i] for r in runs):.2f}" for i in range(3))])
    print(table(["profile", "HardwareProfiler() s (torch imported)",
                 f"real-loop bursts s (budget {MEASURE_BUDGET_S:g} s)", "`nexlify profile` process s"], rows))


if __name__ == "__main__":
    main()
