"""The learning-levers experiment runner: fold windows, the bootstrap, and a smoke run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers import synthetic_frame

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import learning_levers  # noqa: E402


def test_fold_windows_tile_the_tail_without_overlap() -> None:
    budget = learning_levers.Budget(folds=3, seeds=1, train_days=10, validation_days=2, test_days=3,
                                    episodes=1, validations=1, parallel_envs=1)
    folds = [learning_levers.fold_rows(1000, k, budget) for k in (1, 2, 3)]
    # Hand-computed: tests of 72 bars end at 1000, 928, 856; validation 48 bars; training 240 bars.
    assert folds == [(496, 736, 784, 856), (568, 808, 856, 928), (640, 880, 928, 1000)]
    for (_, _, _, test_end), nxt in zip(folds, folds[1:], strict=False):
        assert test_end == nxt[2]  # back to back, no overlap
    for train_start, validation_start, test_start, _ in folds:
        assert train_start < validation_start < test_start  # train, then validation, then test


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = np.random.default_rng(0).normal(1.0, 0.5, 40)
    low, high = learning_levers.bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.5
    assert learning_levers.bootstrap_ci(values) == (low, high)  # seeded


def test_smoke_run_writes_validation_and_test_records(tmp_path) -> None:
    data = [tmp_path / "AAAUSDT_1h.csv", tmp_path / "BBBUSDT_1h.csv"]
    for seed, path in enumerate(data):
        synthetic_frame(2600, seed=seed, drift=0.0002).to_csv(path)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning_levers.py"), "--smoke", "--data",
                             *map(str, data), "--levers", "trend,pooled", "--episodes", "1", "--jobs", "2",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== pooled" in result.stdout and "== trend" in result.stdout and "test excess Sharpe" in result.stdout
    saved = json.loads((out / "learning_levers.json").read_text())
    records = saved["records"]
    # 2 levers x 2 markets x 1 fold x 2 seeds, plus one ensemble per (lever, market); the pooled
    # lever trained one model per seed on both markets and is scored on each market on its own.
    expected = sorted((lever, market, seed) for lever in ("pooled", "trend") for market in ("AAAUSDT_1h", "BBBUSDT_1h")
                      for seed in ("0", "1", "ensemble_mean_q"))
    assert sorted((r["lever"], r["market"], str(r["seed"])) for r in records) == expected
    pooled = [r for r in records if r["lever"] == "pooled" and r["seed"] == 0]
    assert pooled[0]["transitions"] == 2 * 45 * 24 - 1  # 1 episode over both training windows, joined
    assert (out / "pooled" / "pooled" / "fold_1" / "seed_0" / "best_model.pth").exists()
    for r in records:
        for part in ("validation", "test"):
            assert set(r[part]) == {"agent", "buy_and_hold", "ma_crossover", "cash"}
            assert r[part]["cash"]["total_return"] == 0.0
    trained = [r for r in records if isinstance(r["seed"], int)]
    # Smoke budget: 15-day validation and test windows of hourly bars.
    assert all(r["rows"] == {"train": 45 * 24, "validation": 360, "test": 360} for r in trained)
    assert saved["summaries"]["trend"]["seeds"]["n"] == 4
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning_levers.py"), "--levers", "magic",
                          "--data", str(data)], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown lever(s) magic")
