"""The judge's noise floor (benchmarks/noise_floor.py): runs of one configuration split into a pretend
lever and reference, with differences computed by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import noise_floor  # noqa: E402
from model_choice import RULES  # noqa: E402


def test_splits_pair_every_two_disjoint_sides_once():
    assert noise_floor.splits(["a", "b", "c", "d"], 2) == [
        (("a", "b"), ("c", "d")), (("a", "c"), ("b", "d")), (("a", "d"), ("b", "c"))]
    pairs = noise_floor.splits(["a", "b", "c", "d"], 1)
    assert len(pairs) == 6 and len({frozenset(lever + reference) for lever, reference in pairs}) == 6
    five = noise_floor.splits(list("abcde"), 2)  # 5 ways to leave one out, 3 splits of the other four
    assert len(five) == 15 and all(not set(lever) & set(reference) for lever, reference in five)


def _records(offsets: dict[str, float]) -> dict[str, list[dict]]:
    """One market, three folds; each run's value on every window is its offset plus the fold number."""
    def record(fold: int, value: float) -> dict:
        both = {"first_to_second": value, "second_to_first": value}
        return {"market": "A", "fold": fold, "nested": {rule: both for rule in RULES},
                "test": {rule: value for rule in RULES}, "test_long": {rule: 1.0 for rule in RULES}}

    return {name: [record(fold, offset + fold) for fold in (1, 2, 3)] for name, offset in offsets.items()}


def test_the_floor_of_four_runs_by_hand(tmp_path, capsys):
    records = _records({"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0})
    rows = noise_floor.floor_rows(records, ["a", "b", "c", "d"], 2)
    assert len(rows) == len(RULES) * 2
    spread = math.sqrt(sum((x - 1.5) ** 2 for x in (0, 1, 2, 3)) / 3)  # 1.29
    # Splits: (a,b) v (c,d) -2, (a,c) v (b,d) -1, (a,d) v (b,c) 0; constant per window, so the first two
    # intervals have no width and exclude 0, the third is [0, 0].
    rule, lens, means, run_sd, implied, rms, largest, wrong = rows[0]
    assert (rule, lens) == (RULES[0], "nested")
    assert means == "+2.00 +3.00 +4.00 +5.00"  # offset + the mean fold, 2
    assert run_sd == f"{spread:.2f}" and implied == f"{spread:.2f}"  # sqrt(2 / 2) = 1
    assert rms == f"{math.sqrt(5 / 3):.2f}" and largest == "2.00" and wrong == "2/3"
    assert rows[1][1] == "test" and rows[1][2:] == rows[0][2:]
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"records": records}))
    assert noise_floor.main(["--records", str(path), "--runs", "a,b,c,d"]) == 0
    assert "intervals off 0" in capsys.readouterr().out
    # One a side: six pairs, implied SD x sqrt(2).
    one = noise_floor.floor_rows(records, ["a", "b", "c", "d"], 1)
    assert one[0][4] == f"{spread * math.sqrt(2):.2f}" and one[0][7] == "6/6"


def test_bad_runs_or_sides_get_one_error_line(tmp_path, capsys):
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"records": _records({"a": 0.0, "b": 1.0})}))
    assert noise_floor.main(["--records", str(path), "--runs", "a,z"]) == 2
    assert capsys.readouterr().err.startswith("error: --runs names runs not in the records: z")
    assert noise_floor.main(["--records", str(path), "--runs", "a,b", "--side", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: --side 2 needs 4 runs or more")
    assert noise_floor.main(["--records", str(path), str(path), "--runs", "a,b"]) == 2
    assert "in more than one --records file" in capsys.readouterr().err
    assert noise_floor.main(["--records", str(path), "--runs", "a"]) == 2
    assert capsys.readouterr().err.startswith("error: --runs needs two or more runs")
    (tmp_path / "broken.json").write_text("{not json")
    for bad in (tmp_path / "missing.json", tmp_path / "broken.json"):
        assert noise_floor.main(["--records", str(bad), "--runs", "a,b"]) == 2
        assert capsys.readouterr().err.startswith(f"error: cannot read records from {bad}")
