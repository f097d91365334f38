"""The model choice: which validated snapshots of each run act together, rule by rule."""

from pathlib import Path

import pytest

from nexlify.errors import ConfigError
from nexlify.evaluation.snapshots import MODEL_CHOICES, Snapshot, choose, run_snapshots


def _run(seed, scores):
    return [Snapshot(episode, score, Path(f"seed_{seed}/validated_ep{episode}.pth"))
            for episode, score in zip((2, 4, 6, 8), scores, strict=True)]


RUNS = [_run(0, [0.5, 1.5, -0.2, 1.0]), _run(1, [2.0, 0.1, 0.3, 2.0])]


def _picked(rule):
    return [(s.path.parent.name, s.episode) for s in choose(RUNS, rule)]


def test_each_rule_picks_the_snapshots_worked_out_by_hand():
    assert _picked("best") == [("seed_0", 4), ("seed_1", 2)]  # seed 1's tie at 2.0 goes to the earlier
    assert _picked("top2") == [("seed_0", 4), ("seed_0", 8), ("seed_1", 2), ("seed_1", 8)]
    assert _picked("last") == [("seed_0", 8), ("seed_1", 8)]
    assert _picked("all") == [(f"seed_{s}", e) for s in (0, 1) for e in (2, 4, 6, 8)]
    assert set(MODEL_CHOICES) == {"best", "top2", "last", "all"}


def test_the_choice_does_not_depend_on_the_order_snapshots_are_listed_in():
    shuffled = [list(reversed(run)) for run in RUNS]
    for rule in MODEL_CHOICES:
        assert choose(shuffled, rule) == choose(RUNS, rule)


def test_a_run_of_one_snapshot_gives_it_under_every_rule():
    lone = [[Snapshot(3, -1.0, Path("validated_ep3.pth"))]]
    assert all(choose(lone, rule) == lone[0] for rule in MODEL_CHOICES)


def test_bad_rules_and_empty_runs_are_refused():
    with pytest.raises(ConfigError, match="model choice must be one of"):
        choose(RUNS, "median")
    with pytest.raises(ConfigError, match="at least one validated snapshot"):
        choose([RUNS[0], []], "best")
    with pytest.raises(ConfigError, match="at least one validated snapshot"):
        choose([], "all")


def test_run_snapshots_reads_the_history_and_names_a_missing_file(tmp_path):
    for episode in (2, 4):
        (tmp_path / f"validated_ep{episode}.pth").write_bytes(b"model")
    history = [{"episode": 4, "score": 0.25}, {"episode": 2, "score": -1.0}]
    assert run_snapshots(tmp_path, history) == [Snapshot(2, -1.0, tmp_path / "validated_ep2.pth"),
                                                Snapshot(4, 0.25, tmp_path / "validated_ep4.pth")]
    with pytest.raises(ConfigError, match="validated_ep6.pth not found.*keep_validated_models"):
        run_snapshots(tmp_path, [*history, {"episode": 6, "score": 0.0}])
