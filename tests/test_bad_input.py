"""The bad-input suite: data files, flags, config files, run folders and checkpoints a user may get
wrong. Every case must exit with code 2, print exactly one ``error:`` line that names the problem and
the fix, show no traceback, and leave every file that existed before byte for byte unchanged.

The CLI runs in-process (``nexlify.cli.main``) so the whole suite takes seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import synthetic_frame
from nexlify.cli import main


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the set of folders): any change shows."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        digest[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return digest


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    """A user's folder: good candles, and a previous run whose results must survive every mistake."""
    synthetic_frame(500, seed=1).to_csv(tmp_path / "candles.csv")
    run = tmp_path / "models" / "adaptive_rl"
    run.mkdir(parents=True)
    (run / "best_model.pth").write_bytes(b"previous run's best model")
    (run / "training_results.json").write_text('{"run": "previous"}')
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    return tmp_path


def assert_refused(argv: list[str], workspace: Path, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run ``nexlify ARGV`` in ``workspace``; check the bar; return the error line."""
    before = tree_digest(workspace)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert tree_digest(workspace) == before, "files that existed before were changed"
    return lines[0]


def write_config(workspace: Path, content: str) -> str:
    path = workspace / "config.json"
    path.write_text(content)
    return str(path)


@pytest.fixture()
def no_profiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the hardware is measured: input errors must come first."""
    import nexlify.hardware.profiler as profiler

    def refuse(*args, **kwargs):
        raise AssertionError("the hardware was profiled before the bad input was refused")

    monkeypatch.setattr(profiler, "HardwareProfiler", refuse)


# --- flags ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "expected"), [
    (["--seed", "-1"], ("--seed", "whole number from 0 to 4,294,967,295", "got -1")),
    (["--seed", str(2**70)], ("--seed", "4,294,967,295")),
    (["--seed", "abc"], ("--seed", "expected a whole number", "'abc'")),
    (["--data-days", "10000000"], ("--data-days", "from 1 to 36,500")),
    (["--balance", "inf"], ("--balance", "finite number", "inf")),
    (["--balance", "nan"], ("--balance", "finite number")),
    (["--balance", "-5"], ("--balance", "finite number in (0")),
    (["--episodes", "0"], ("--episodes", "from 1")),
    (["--batch-size", "many"], ("--batch-size", "whole number")),
    (["--parallel-envs", "0"], ("--parallel-envs", "from 1")),
    (["--model-size", "huge"], ("--model-size", "invalid choice")),
    (["--device", "tpu"], ("--device", "cpu, cuda, cuda:N or mps")),
    (["--device", "cuda"], ("--device", "use --device cpu")),
    (["--data", "missing.csv"], ("--data", "not found")),
    (["--data", "folder"], ("--data", "is not a file")),
    (["--data", "candles.csv", "--exchange", "binance"], ("give one of them",)),
    (["--symbol", "ETH/USDT"], ("need --exchange",)),
    (["--resume", "nowhere.pth"], ("--resume", "not found")),
    (["--checkpoint-dir", "a_file"], ("--checkpoint-dir", "not a folder")),
    (["--checkpoint-dir", "a_file/run"], ("--checkpoint-dir", "which is a file")),
])
def test_bad_train_flags(flags, expected, workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    if "--device" in flags and "cuda" in flags:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    assert_refused(["train", "--checkpoint-dir", "fresh", *flags], workspace, capsys, *expected)
    assert not (workspace / "fresh").exists() or "--checkpoint-dir" in flags


def test_unwritable_checkpoint_dir_under_proc(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    assert_refused(["train", "--data", "candles.csv", "--data-days", "20", "--checkpoint-dir", "/proc/nexlify/run"],
                   workspace, capsys, "--checkpoint-dir /proc/nexlify/run", "choose a folder")


def test_previous_run_is_refused_without_resume_or_overwrite(workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    line = assert_refused(["train", "--data", "candles.csv"], workspace, capsys,
                          "models/adaptive_rl already holds a previous run", "--resume", "--overwrite")
    assert "best_model.pth" in line


MODEL = "models/adaptive_rl/best_model.pth"


@pytest.mark.parametrize(("argv", "expected"), [
    (["evaluate", "--model", "missing.pth"], ("--model", "not found")),
    (["evaluate", "--model", "folder"], ("--model", "is not a file")),
    (["evaluate", "--model", MODEL, "--out", "a_file/eval"], ("--out", "which is a file")),
    (["evaluate", "--model", MODEL, "--data", "nowhere.csv"], ("--data", "not found")),
    (["evaluate", "--model", MODEL, "--data-days", "30"], ("unrecognized", "--data-days")),
    (["evaluate", "--model", MODEL, "--device", "tpu"], ("--device",)),
    (["download", "--days", "0"], ("--days", "from 1")),
    (["sweep", "--space", "folder", "--trials", "2"], ("--space folder", "is not a file")),
    (["bogus"], ("invalid choice",)),
])
def test_bad_flags_of_other_commands(argv, expected, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    assert_refused(argv, workspace, capsys, *expected)


# --- config files -----------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "expected"), [
    ('{"batch_size": "64"}', ("config key batch_size", "whole number", "'64' (str)")),
    ('{"batch_size": null}', ("config key batch_size", "None")),
    ('{"seed": "abc"}', ("config key seed", "'abc'")),
    ('{"seed": -1}', ("config key seed", "from 0")),
    ('{"dueling": "no"}', ("config key dueling", "true or false", "'no'")),
    ('{"memory_reserve_gb": "x"}', ("config key memory_reserve_gb", "finite number", "'x'")),
    ('{"learning_rate": NaN}', ("not valid JSON", "NaN")),
    ('{"initial_balance": 1e999}', ("config key initial_balance", "finite")),
    ('{"buffer_size": 1e30}', ("config key buffer_size", "whole number")),
    ('{"model_size": 3}', ("config key model_size", "one of tiny")),
    ('{"augment": "flip"}', ("config key augment", "one of none, mirror", "'flip'")),
    ('{"dsr_eta": 0}', ("config key dsr_eta", "(0, 1]", "got 0")),
    ('{"eval_interval": 0}', ("config key eval_interval", "[0.01, 1e+09]", "got 0")),
    ('{"learning_rat": 0.1}', ("unknown config keys: ['learning_rat']",)),
    ("[1, 2]", ("JSON object",)),
    ("{nope", ("not valid JSON",)),
    ("", ("not valid JSON",)),
])
def test_bad_config_files(content, expected, workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    config = write_config(workspace, content)
    assert_refused(["train", "--config", config, "--checkpoint-dir", "fresh"], workspace, capsys, *expected)
    assert not (workspace / "fresh").exists()


def test_a_training_window_too_short_to_mirror_is_refused(workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    synthetic_frame(24 * 40, seed=2).to_csv(workspace / "short.csv")
    config = write_config(workspace, '{"augment": "mirror", "feature_set": "trend"}')
    # The trend features' 720-candle warm-up leaves 168 training candles: too few for their mirror.
    assert_refused(["train", "--config", config, "--data", "short.csv", "--data-days", "40", "--checkpoint-dir",
                    "fresh"], workspace, capsys, "augment 'mirror' needs at least 722 training candles", "has 168",
                   "--data-days")
    assert not (workspace / "fresh").exists()


def test_config_that_is_a_folder_or_huge(workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    assert_refused(["train", "--config", "folder", "--checkpoint-dir", "fresh"], workspace, capsys,
                   "--config folder is a folder")
    (workspace / "big.json").write_bytes(b"{" + b" " * (2 << 20) + b"}")
    assert_refused(["train", "--config", "big.json", "--checkpoint-dir", "fresh"], workspace, capsys, "over 1 MB")


# --- data files -------------------------------------------------------------------------------
def _csv(workspace: Path, name: str, rows: int, **changes) -> str:
    frame = synthetic_frame(rows, seed=2)
    for column, value in changes.items():
        frame.loc[frame.index[rows // 2], column] = value
    frame.to_csv(workspace / name)
    return name


def test_data_errors_come_before_profiling_and_any_folder(workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    bad = workspace / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2024-01-01 00:00,1,2,0.5,1.5,10\n"
                   "2024-01-01 01:00,1,0.5,2,1,10\n")
    assert_refused(["train", "--data", "bad.csv", "--checkpoint-dir", "fresh"], workspace, capsys,
                   "line 3", "high 0.5 is below low 2.0", "Fix:")
    assert not (workspace / "fresh").exists()


@pytest.mark.parametrize(("rows", "expected"), [
    (50, ("50 candles", "use a longer file")),
    (49, ("49 candles", "use a longer file")),
])
def test_too_short_files_are_told_to_use_a_longer_file(rows, expected, workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    name = _csv(workspace, f"short{rows}.csv", rows)
    line = assert_refused(["train", "--data", name, "--checkpoint-dir", "fresh"], workspace, capsys, *expected)
    assert "--data-days" not in line  # no day count can help a file this short


@pytest.mark.parametrize(("content", "expected"), [
    (b"", ("empty",)),
    (b"\x00\xff\xfe garbage \x00" * 100, ("Fix:",)),
    (b"timestamp,open,high,low,close,volume\n" + b"2024-01-01,1,1,1,1\n" * 100, ("Fix:",)),
])
def test_unreadable_data_files(content, expected, workspace, capsys, monkeypatch, no_profiling):
    monkeypatch.chdir(workspace)
    (workspace / "odd.csv").write_bytes(content)
    assert_refused(["train", "--data", "odd.csv", "--checkpoint-dir", "fresh"], workspace, capsys, *expected)


def test_a_disk_that_fills_up_mid_run_is_one_line(workspace, capsys, monkeypatch):
    """ENOSPC from any write: one line, and the previous files are intact (writes are atomic)."""
    import errno
    import os

    real_fsync = os.fsync
    calls = {"n": 0}

    def fills_up(fd):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    monkeypatch.chdir(workspace)
    before = tree_digest(workspace / "models")
    capsys.readouterr()
    code = main(["train", "--data", "candles.csv", "--data-days", "20", "--episodes", "2", "--model-size", "tiny",
                 "--batch-size", "16", "--parallel-envs", "2", "--save-interval", "1", "--checkpoint-dir", "disk",
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: No space left on device") and "free disk space" in err[-1]
    assert tree_digest(workspace / "models") == before
    assert json.loads((workspace / "models/adaptive_rl/training_results.json").read_text()) == {"run": "previous"}


# --- hostile files: bounded memory ---------------------------------------------------------------
def test_a_1gb_file_without_newlines_is_refused_early_with_little_memory(tmp_path):
    """Measured in a child process: its peak RSS stays far below the 7 GB the CSV reader once took."""
    import subprocess
    import sys

    hostile = tmp_path / "one_line.csv"
    with hostile.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GB of zero bytes and no newline (sparse: costs no disk)
    child = ("import resource, sys; from nexlify.cli import main; "
             f"code = main(['train', '--data', {str(hostile)!r}, '--checkpoint-dir', {str(tmp_path / 'run')!r}]); "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    peak_mb = int(result.stdout.strip().splitlines()[-1]) / 1024  # Linux reports KiB
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "longer than 4,096 bytes" in result.stderr
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"
    assert not (tmp_path / "run").exists()


def test_too_many_lines_are_refused_before_parsing(tmp_path, capsys, monkeypatch):
    import nexlify.data.market as market

    monkeypatch.setattr(market, "MAX_ROWS", 100)
    synthetic_frame(150).to_csv(tmp_path / "long.csv")
    assert_refused(["train", "--data", str(tmp_path / "long.csv"), "--checkpoint-dir", str(tmp_path / "run")],
                   tmp_path, capsys, "more than 100 lines", "shorter span")
