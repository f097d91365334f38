"""The examples run as a user runs them (a subprocess, ``--quick``) and write only into ``--out``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, out: Path, cwd: Path) -> str:
    """Run ``examples/NAME --quick --out OUT`` from ``cwd``; return its stdout (fails on a non-zero exit)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out)],
                            cwd=cwd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{name} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty current directory, so a default output path could never land in the repository."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


def assert_nothing_outside(out: Path, cwd: Path) -> None:
    assert out.is_dir()
    assert list(cwd.iterdir()) == [], "the example wrote outside --out"


TRAINING_OUTPUTS = ("hardware_profile.json", "training_results.json", "training_report.png",
                    "training_summary.txt", "checkpoint_ep2.pth", "best_model.pth", "final_model.pth")


def test_adaptive_rl_example_tours_the_api(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "tour"
    stdout = run_example("adaptive_rl_example.py", out, workdir)
    for step in range(1, 8):
        assert f"[{step}/7]" in stdout
    assert "plan: device " in stdout and "plan: model_size " in stdout  # explain() lines
    assert "override:  large (110,467 parameters)" in stdout
    assert "a misspelt key is refused" in stdout
    for baseline in ("agent", "buy_and_hold", "cash", "random", "ma_crossover"):
        assert baseline in stdout
    for name in TRAINING_OUTPUTS:
        assert (out / "run" / name).exists(), name
    assert (out / "hardware_profile.json").exists() and (out / "best_model_copy.pth").exists()
    summary = json.loads((out / "example_summary.json").read_text())
    assert summary["episodes_done"] == 2
    assert set(summary["test_sharpe"]) == {"agent", "buy_and_hold", "cash", "random", "ma_crossover"}
    assert summary["live_decision"]["flat"] in ("hold", "buy", "sell")
    assert_nothing_outside(out, workdir)


def test_custom_csv_example_validates_and_trains_on_a_file(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "csv"
    stdout = run_example("custom_csv.py", out, workdir)
    assert "480 candles" in stdout
    assert "refused:" in stdout and "line 11" in stdout and "high" in stdout and "Fix:" in stdout
    assert "observation of 12 numbers" in stdout and "trades 2" in stdout
    assert "train/validation/test rows" in stdout
    assert (out / "my_candles.csv").read_text().startswith("Date,Open,High,Low,Close,Volume")
    for name in TRAINING_OUTPUTS:
        assert (out / "run" / name).exists(), name
    results = json.loads((out / "run" / "training_results.json").read_text())
    assert results["run"]["data_source"].endswith("my_candles.csv")
    assert_nothing_outside(out, workdir)


def test_sb3_example_trains_and_backtests_on_the_env(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "sb3"
    stdout = run_example("sb3_on_nexlify_env.py", out, workdir)
    assert "SB3 DQN for 300 steps" in stdout
    assert (out / "sb3_dqn.zip").exists()
    results = json.loads((out / "sb3_results.json").read_text())
    assert set(results["test"]) == {"sb3_dqn", "buy_and_hold", "cash", "random", "ma_crossover"}
    # The plain Gymnasium loop and the backtest run the same greedy policy through the same accounting.
    loop = stdout.split("Gymnasium loop final equity ")[1].split(" ")[0]
    assert loop == f"{results['test']['sb3_dqn']['final_equity']:,.2f}"
    assert_nothing_outside(out, workdir)


def test_resume_example_reproduces_and_extends_a_run(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "resume"
    stdout = run_example("resume_training.py", out, workdir)
    assert "wrote checkpoint_ep2.pth, checkpoint_ep4.pth" in stdout
    assert "identical to the uninterrupted run: yes" in stdout
    assert "6 episodes done" in stdout
    assert (out / "first" / "checkpoint_ep6.pth").exists()
    extended = json.loads((out / "first" / "training_results.json").read_text())
    assert extended["run"]["episodes_done"] == 6 and len(extended["episodes"]) == 6
    assert (out / "resumed" / "final_model.pth").exists()
    assert_nothing_outside(out, workdir)
