"""A resume continues on exactly its checkpoint's data, and ``evaluate`` backtests exactly the
recorded test window, or each refuses with one line; unusable data and damaged models are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import synthetic_frame
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.cli import main
from test_bad_input import assert_refused

FAST = ["--model-size", "tiny", "--batch-size", "16", "--parallel-envs", "2", "--save-interval", "2", "--quiet",
        "--seed", "5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-episode run on the last 20 days of a 600-candle file: root/candles.csv, root/run/."""
    root = tmp_path_factory.mktemp("trained")
    synthetic_frame(600, seed=8).to_csv(root / "candles.csv")
    code = main(["train", "--data", str(root / "candles.csv"), "--data-days", "20", "--episodes", "2",
                 "--checkpoint-dir", str(root / "run"), *FAST])
    assert code == 0
    return root


@pytest.fixture()
def workspace(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained run, as the current directory."""
    shutil.copy(trained / "candles.csv", tmp_path / "candles.csv")
    shutil.copytree(trained / "run", tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def grown(extra: int) -> pd.DataFrame:
    """The fixture's 600 candles followed by ``extra`` newer ones (the file grew since training)."""
    base = synthetic_frame(600, seed=8)
    newer = synthetic_frame(extra, seed=99)
    newer.index = base.index[-1] + pd.to_timedelta(range(1, extra + 1), unit="h")
    newer.index.name = base.index.name
    return pd.concat([base, newer])


def recorded(path: Path) -> dict:
    return AdaptiveDQNAgent.from_checkpoint(path).checkpoint_metadata


def test_the_checkpoint_records_source_window_and_test_window(workspace: Path) -> None:
    meta = recorded(workspace / "run/checkpoint_ep2.pth")
    assert Path(meta["data_origin"]).is_absolute() and meta["data_origin"].endswith("candles.csv")
    frame = synthetic_frame(600, seed=8)
    assert meta["data_window"][1] == frame.index[-1].isoformat()
    assert meta["data_days"] == 20
    rows = meta["split_rows"]
    # 20 days of hourly candles = 480, minus 48 warm-up = 432: floor(0.7 n) / floor(0.15 n) / the rest.
    assert rows == {"train": 302, "validation": 64, "test": 66}
    assert meta["test_window"] == [frame.index[-66].isoformat(), frame.index[-1].isoformat()]


@pytest.mark.parametrize(("flags", "expected"), [
    (["--data-days", "30"], ("data_days=30 contradicts its data_days=20",)),
    (["--batch-size", "64"], ("batch_size=64 contradicts",)),
    (["--seed", "6"], ("seed=6 contradicts",)),
    (["--episodes", "2"], ("2 episode(s) done already", "--episodes N with N > 2")),
    (["--exchange", "binance"], ("--exchange would download other candles",)),
    (["--data", "other.csv"], ("--data other.csv is not the data", "drop --data")),
])
def test_resume_refuses_flags_that_contradict_the_checkpoint(flags, expected, workspace, capsys):
    synthetic_frame(600, seed=9).to_csv(workspace / "other.csv")
    assert_refused(["train", "--resume", "run/checkpoint_ep2.pth", "--checkpoint-dir", "run", *flags],
                   workspace, capsys, *expected)


def test_resume_continues_on_exactly_the_recorded_window_after_the_file_grew(workspace, capsys, monkeypatch):
    meta = recorded(workspace / "run/checkpoint_ep2.pth")
    origin = Path(meta["data_origin"])
    original = origin.read_bytes()
    try:
        grown(100).to_csv(origin)  # 100 newer candles appended
        code = main(["train", "--resume", "run/checkpoint_ep2.pth", "--checkpoint-dir", "run", "--episodes", "4"])
        assert code == 0, capsys.readouterr().err
    finally:
        origin.write_bytes(original)
    results = json.loads((workspace / "run/training_results.json").read_text())
    frame = synthetic_frame(600, seed=8)
    assert results["run"]["data_end"] == str(frame.index[-1])  # not the 100 newer candles
    assert results["run"]["episodes_done"] == 4 and results["run"]["rows"] == meta["split_rows"]
    assert recorded(workspace / "run/final_model.pth")["scaler"] == meta["scaler"]


def test_resume_refuses_when_the_data_is_gone_or_edited(workspace, capsys):
    meta = recorded(workspace / "run/checkpoint_ep2.pth")
    origin = Path(meta["data_origin"])
    original = origin.read_bytes()
    argv = ["train", "--resume", "run/checkpoint_ep2.pth", "--checkpoint-dir", "run", "--episodes", "4"]
    try:
        frame = synthetic_frame(600, seed=8)
        frame.loc[frame.index[-100], "close"] = frame["close"].iloc[-100] * 1.0001
        frame.loc[frame.index[-100], "high"] = max(frame["high"].iloc[-100], frame["close"].iloc[-100])
        frame.to_csv(origin)
        assert_refused(argv, workspace, capsys, "are not the ones", "sha256", "use the original data")
        assert_refused(["evaluate", "--model", "run/best_model.pth"], workspace, capsys, "are not the ones")
        origin.unlink()
        assert_refused(argv, workspace, capsys, "no longer exists", "--data FILE")
        frame.iloc[:-200].to_csv(origin)  # cut before the window's end
        assert_refused(argv, workspace, capsys, "is no longer in the data")
    finally:
        origin.write_bytes(original)


def test_evaluate_without_data_uses_exactly_the_recorded_test_window(workspace, capsys):
    meta = recorded(workspace / "run/best_model.pth")
    origin = Path(meta["data_origin"])
    original = origin.read_bytes()
    try:
        grown(300).to_csv(origin)  # the data grew by 300 candles since training
        assert main(["evaluate", "--model", "run/best_model.pth", "--out", "eval"]) == 0
    finally:
        origin.write_bytes(original)
    results = json.loads((workspace / "eval/evaluation_results.json").read_text())
    assert results["rows"] == meta["split_rows"]["test"] == 66
    assert results["data"].startswith("test split of")


@pytest.mark.parametrize(("rows", "change", "expected"), [
    (49, {}, ("too few rows (49 candles", "at least 80")),
    (79, {}, ("too few rows (79 candles",)),
    (300, {"close": 1e308, "high": 1e308}, ("implausibly large",)),
])
def test_evaluate_refuses_unusable_data(rows, change, expected, workspace, capsys):
    frame = synthetic_frame(rows, seed=3)
    for column, value in change.items():
        frame.loc[frame.index[rows // 2], column] = value
    frame.to_csv(workspace / "bad.csv")
    assert_refused(["evaluate", "--model", "run/best_model.pth", "--data", "bad.csv", "--out", "eval"],
                   workspace, capsys, *expected)
    assert not (workspace / "eval").exists()


def test_results_files_are_strict_json(tmp_path):
    from nexlify.evaluation.report import write_results_json

    write_results_json(tmp_path / "r.json", {"sharpe": float("inf"), "nested": [float("nan"), 1.5]})

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {"sharpe": None,
                                                                                     "nested": [None, 1.5]}


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("argv", [
    ["evaluate", "--model", "run/best_model.pth", "--out", "eval"],
    ["train", "--resume", "run/checkpoint_ep2.pth", "--checkpoint-dir", "run", "--episodes", "4"],
])
def test_damaged_checkpoints_are_refused_by_every_command(argv, workspace, capsys):
    _damage(workspace / argv[argv.index("--model") + 1 if "--model" in argv else argv.index("--resume") + 1])
    assert_refused(argv, workspace, capsys, "is damaged", "sha256")


def test_resume_of_a_model_without_training_state_is_refused(workspace, capsys):
    assert_refused(["train", "--resume", "run/best_model.pth", "--checkpoint-dir", "run", "--episodes", "4"],
                   workspace, capsys, "holds a model but no training state")


def test_row_numbers_as_timestamps_are_refused(workspace, capsys):
    frame = synthetic_frame(600, seed=1).reset_index(drop=True)
    frame.index.name = "timestamp"
    frame.to_csv(workspace / "rows.csv")
    assert_refused(["train", "--data", "rows.csv", "--checkpoint-dir", "fresh"], workspace, capsys,
                   "look like row numbers")


@pytest.mark.parametrize("case", ["state_size_-1", "state_size_abc", "state_size_1e6", "meta_a_list", "legacy_v1"])
def test_crafted_and_old_checkpoints_are_one_line_in_every_command(case, workspace, capsys):
    import hashlib

    import torch

    from nexlify import serialization

    path = workspace / "run/best_model.pth"
    data = path.read_bytes()
    start = len(serialization.MAGIC) + 8
    length = int.from_bytes(data[len(serialization.MAGIC):start], "little")
    header, payload = json.loads(data[start:start + length]), data[start + length + 32:]
    meta = header["meta"]
    changed = {"state_size_-1": {**header, "meta": {**meta, "state_size": -1}},
               "state_size_abc": {**header, "meta": {**meta, "state_size": "abc"}},
               "state_size_1e6": {**header, "meta": {**meta, "state_size": 10**6}},
               "meta_a_list": {**header, "meta": [meta]}}.get(case)
    if changed is None:
        torch.save({"model_state_dict": {}}, path)  # what a format-1 file starts like: a torch zip
    else:
        head = json.dumps(changed).encode()
        digest = hashlib.sha256(head + payload).digest()
        path.write_bytes(serialization.MAGIC + len(head).to_bytes(8, "little") + head + digest + payload)
    expected = "earlier Nexlify" if case == "legacy_v1" else "corrupt"
    assert_refused(["evaluate", "--model", "run/best_model.pth", "--out", "eval"], workspace, capsys, expected)
