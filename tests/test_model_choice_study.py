"""The model-choice study (benchmarks/model_choice.py): halves of a window, and its test scores agree
with the walk-forward's own ensembles of the same snapshots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import make_slice, synthetic_frame, tiny_config
from nexlify.evaluation.walkforward import plan_jobs, run_walkforward

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import model_choice  # noqa: E402


def test_halves_split_the_rows_without_losing_or_repeating_one():
    market = make_slice([100.0 + i for i in range(11)])
    first, second = model_choice.half(market, "first"), model_choice.half(market, "second")
    assert (len(first), len(second)) == (5, 6)
    assert list(first.close) + list(second.close) == list(market.close)
    assert (first.features == market.features[:5]).all() and (second.timestamps == market.timestamps[5:]).all()
    assert model_choice.other("first") == "second" and model_choice.other("second") == "first"


def test_window_values_average_a_window_over_runs_and_both_directions():
    def record(market, fold, f2s, s2f, test):
        return {"market": market, "fold": fold, "nested": {"best": {"first_to_second": f2s, "second_to_first": s2f}},
                "test": {"best": test}}

    records = [record("A", 1, 1.0, 3.0, 0.5), record("A", 1, -1.0, 1.0, 1.5), record("B", 1, 2.0, 2.0, -1.0)]
    assert model_choice.window_values(records, "best", "nested") == {("A", 1): 1.0, ("B", 1): 2.0}
    assert model_choice.window_values(records, "best", "forward") == {("A", 1): 0.0, ("B", 1): 2.0}
    assert model_choice.window_values(records, "best", "test") == {("A", 1): 1.0, ("B", 1): -1.0}


def test_the_studys_test_scores_are_the_walkforwards_ensembles(tmp_path, capsys):
    data = tmp_path / "market.csv"
    synthetic_frame(24 * 12, seed=5).to_csv(data)
    overrides = tiny_config(episodes=2, eval_interval=1).to_dict()
    jobs = plan_jobs([data], tmp_path / "run", overrides, [1, 2], test_days=2, train_days=5, validation_days=2)
    jobs = [job for job in jobs if job.fold == 1]
    judged = {choice: run_walkforward(jobs, ensemble="mean_q", model_choice=choice).folds[0]
              for choice in ("all", "last", "best")}  # "all" trains keeping every snapshot
    out = tmp_path / "choice.json"
    assert model_choice.main([str(tmp_path / "run"), "--jobs", "1", "--out", str(out)]) == 0
    assert "minus best" in capsys.readouterr().out
    (record,) = json.loads(out.read_text())["records"]["run"]
    assert record["seeds"] == [1, 2]
    for choice, row in judged.items():
        assert record["test"][choice] == pytest.approx(row["excess_sharpe"])
