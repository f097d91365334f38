"""One run per folder at a time, a lock that a killed run never leaves stuck, and no silent overwrite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import synthetic_frame
from nexlify.cli import main
from nexlify.errors import ConfigError
from nexlify.training.run_folder import LOCK_FILE, RunFolderLock, check_previous_run

FAST = ["--data-days", "20", "--episodes", "2", "--model-size", "tiny", "--batch-size", "16",
        "--parallel-envs", "2", "--save-interval", "2", "--quiet", "--seed", "1"]


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, capsys):
    synthetic_frame(500).to_csv(tmp_path / "c.csv")
    with RunFolderLock(tmp_path / "run"):
        assert main(["train", "--data", str(tmp_path / "c.csv"), "--checkpoint-dir", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --checkpoint-dir") and f"in use by another nexlify run (PID {os.getpid()})" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]  # nothing written by the loser


def test_a_killed_runs_lock_does_not_block(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time; from nexlify.training.run_folder import RunFolderLock; "
            f"lock = RunFolderLock({str(folder)!r}).__enter__(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"PID {holder.pid}"), RunFolderLock(folder):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    deadline = time.monotonic() + 10
    while True:  # the OS drops the lock with the process; the file it left is simply reused
        try:
            with RunFolderLock(folder):
                break
        except ConfigError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert (folder / LOCK_FILE).exists()


def test_overwrite_replaces_only_the_previous_runs_outputs(tmp_path, capsys):
    synthetic_frame(500).to_csv(tmp_path / "c.csv")
    run = tmp_path / "run"
    run.mkdir()
    (run / "best_model.pth").write_bytes(b"old")
    (run / "checkpoint_ep50.pth").write_bytes(b"old")
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--data", str(tmp_path / "c.csv"), "--checkpoint-dir", str(run), "--overwrite", *FAST]) == 0
    assert not (run / "checkpoint_ep50.pth").exists()  # the old run's files never mix with the new run's
    assert (run / "best_model.pth").read_bytes() != b"old" and (run / "checkpoint_ep2.pth").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert "removed the previous run's" in capsys.readouterr().err


def test_resuming_into_another_runs_folder_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "final_model.pth").write_bytes(b"other run")
    check_previous_run(tmp_path / "b", resume=True, overwrite=False)  # continuing that folder's own run
    with pytest.raises(ConfigError, match="already holds a previous run"):
        check_previous_run(tmp_path / "b", resume=False, overwrite=False)
    check_previous_run(tmp_path / "empty", resume=False, overwrite=False)
    assert not Path(tmp_path / "empty").exists()


def test_quiet_still_says_where_the_interrupt_checkpoint_went(tmp_path, capsys, monkeypatch):
    from nexlify.training import pipeline
    from nexlify.training.trainer import INTERRUPTED_CHECKPOINT

    def interrupted(self):
        (self.output_dir / INTERRUPTED_CHECKPOINT).write_bytes(b"saved by the trainer")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Trainer, "train", interrupted)
    synthetic_frame(500).to_csv(tmp_path / "c.csv")
    code = main(["train", "--data", str(tmp_path / "c.csv"), "--checkpoint-dir", str(tmp_path / "run"), *FAST])
    assert code == 130
    saved = tmp_path / "run" / INTERRUPTED_CHECKPOINT
    assert f"continue with --resume {saved}" in capsys.readouterr().err


@pytest.mark.parametrize("signal_name,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stopped_run_exits_with_its_signal_code_and_says_so_once(tmp_path, capsys, monkeypatch, signal_name,
                                                                    code):
    from nexlify.training import pipeline
    from nexlify.training.trainer import INTERRUPTED_CHECKPOINT, TrainingInterrupted

    def stopped(self):
        saved = self.output_dir / INTERRUPTED_CHECKPOINT
        saved.write_bytes(b"saved by the trainer")
        raise TrainingInterrupted(signal_name, saved)

    monkeypatch.setattr(pipeline.Trainer, "train", stopped)
    synthetic_frame(500).to_csv(tmp_path / "c.csv")
    assert main(["train", "--data", str(tmp_path / "c.csv"), "--checkpoint-dir", str(tmp_path / "run"), *FAST]) == code
    err = capsys.readouterr().err
    assert err.count("continue with --resume") == 1
    assert "\ninterrupted\n" not in f"\n{err}"
