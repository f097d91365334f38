"""The command line: one-line errors with exit code 2, and the main commands end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import synthetic_frame
from nexlify.cli import main


def _run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nexlify.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--episodes", "0"], "whole number from 1"),
        (["train", "--model-size", "huge"], "invalid choice"),
        (["train", "--data", "missing.csv"], "not found"),
        (["train", "--data", "a.csv", "--exchange", "binance"], "give one of them"),
        (["train", "--symbol", "ETH/USDT"], "need --exchange"),
        (["train", "--resume", "nowhere.pth"], "not found"),
        (["evaluate", "--model", "missing.pth"], "not found"),
        (["train", "--batch-size", "many"], "whole number"),
        (["bogus"], "invalid choice"),
        (["trade", "--model", "."], ". is not a file"),
        (["download", "--out", "candles.txt"], "unsupported file type"),  # refused before any download
        (["download", "--out", "."], "is a folder"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err
    assert "\n" not in err


def test_help_and_flag_errors_answer_without_loading_the_training_engine():
    # torch and pandas take seconds to import: --help and a mistyped flag must not wait for them.
    probe = ("import sys\nfrom nexlify.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
             "except SystemExit as stop:\n    code = stop.code\n"
             "print(code, sorted(m for m in ('torch', 'pandas') if m in sys.modules))")
    for argv, code in ((["walkforward", "--help"], 0), (["walkforward", "--seeds", "0"], 2), (["--help"], 0)):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert done.stdout.splitlines()[-1] == f"{code} []", (argv, done.stdout[-300:], done.stderr[-300:])


def test_bad_config_file_is_refused(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"batch_size": 64, "learning_rat": 0.1}))
    data = tmp_path / "candles.csv"
    synthetic_frame(400).to_csv(data)
    assert main(["train", "--config", str(config), "--data", str(data), "--checkpoint-dir", str(tmp_path / "m")]) == 2
    assert "unknown config keys: ['learning_rat']" in capsys.readouterr().err


def test_bad_data_file_is_refused_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    header = "timestamp,open,high,low,close,volume\n"
    bad.write_text(header + "2024-01-01 00:00,1,2,0.5,1.5,10\n2024-01-01 01:00,1,0.5,2,1,10\n")  # high < low
    result = _run_cli("train", "--data", str(bad), "--checkpoint-dir", str(tmp_path / "m"), "--quiet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:")


def test_train_then_evaluate_end_to_end(tmp_path, capsys):
    data = tmp_path / "candles.csv"
    synthetic_frame(500, seed=3).to_csv(data)
    out = tmp_path / "models"
    code = main(["train", "--data", str(data), "--episodes", "4", "--save-interval", "2", "--data-days", "30",
                 "--model-size", "tiny", "--batch-size", "16", "--parallel-envs", "2", "--checkpoint-dir", str(out),
                 "--quiet", "--seed", "3"])
    assert code == 0
    plan = json.loads((out / "hardware_profile.json").read_text())
    assert plan["plan"]["model_size"] == "tiny" and plan["plan"]["batch_size"] == 16
    assert plan["overrides"]["parallel_envs"] == 2
    assert plan["reasons"]
    assert (out / "checkpoint_ep4.pth").exists()
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "best_model.pth"), "--out", str(tmp_path / "eval")]) == 0
    evaluation = json.loads((tmp_path / "eval" / "evaluation_results.json").read_text())
    assert set(evaluation["test"]) == {"agent", "buy_and_hold", "cash", "random", "ma_crossover"}
    assert main(["evaluate", "--model", str(out / "final_model.pth"), "--data", str(data),
                 "--out", str(tmp_path / "eval2")]) == 0


def test_parallel_envs_printed_and_recorded_are_the_ones_that_ran(tmp_path, capsys):
    data = tmp_path / "candles.csv"
    synthetic_frame(500, seed=3).to_csv(data)
    out = tmp_path / "models"
    assert main(["train", "--data", str(data), "--episodes", "3", "--save-interval", "3", "--model-size", "tiny",
                 "--batch-size", "16", "--parallel-envs", "8", "--checkpoint-dir", str(out), "--quiet"]) == 0
    assert "3 parallel envs, 3 episodes" in capsys.readouterr().err  # 8 planned, 3 ran
    assert json.loads((out / "hardware_profile.json").read_text())["plan"]["parallel_envs"] == 3
    assert json.loads((out / "training_results.json").read_text())["config"]["parallel_envs"] == 3


def test_resume_latest_continues_a_run(tmp_path):
    data = tmp_path / "candles.csv"
    synthetic_frame(400, seed=4).to_csv(data)
    out = tmp_path / "models"
    common = ["--data", str(data), "--save-interval", "2", "--model-size", "tiny", "--batch-size", "16",
              "--parallel-envs", "2", "--checkpoint-dir", str(out), "--quiet", "--data-days", "20"]
    assert main(["train", "--episodes", "2", *common]) == 0
    assert main(["train", "--episodes", "4", "--resume", *common]) == 0
    results = json.loads((out / "training_results.json").read_text())
    assert results["run"]["episodes_done"] == 4


def test_profile_json_lists_plan_and_reasons():
    result = _run_cli("profile", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {"cpu", "ram", "gpu", "storage", "benchmarks", "environment"} <= set(payload["profile"])
    assert payload["plan"]["device"] == "cpu"  # this test machine has no usable GPU
    assert len(payload["reasons"]) >= 5
    # The planned run's time: the measured real-loop speed of exactly the planned setting, plus its
    # validations, checkpoints and start-up as measured.
    rate, parts = payload["projected_transitions_per_s"], payload["projection"]
    assert parts["loop_s"] == pytest.approx(payload["plan"]["episodes"] * 3000 / rate, abs=0.01)
    assert parts["validations"] == 100 and parts["validation_s"] > 0 and parts["checkpoint_s"] > 0
    total = parts["loop_s"] + parts["validation_s"] + parts["checkpoint_s"] + parts["startup_s"]
    assert payload["projected_train_seconds"] == pytest.approx(total, abs=0.1)


def test_guide_script_wrapper_shows_train_help():
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_adaptive_rl_agent.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--episodes", "--data-days", "--balance", "--model-size", "--batch-size", "--resume"):
        assert flag in result.stdout


def test_download_writes_the_requested_span(tmp_path, monkeypatch, capsys):
    import time

    import ccxt
    import pandas as pd

    from test_exchange import FakeExchange

    now_ms = int(time.time() * 1000)

    class FakeBinance(FakeExchange):
        def __init__(self, options):
            super().__init__(now_ms=now_ms, page_cap=500)

    monkeypatch.setattr(ccxt, "binance", FakeBinance)
    out = tmp_path / "btc.csv"
    code = main(["download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
                 "--days", "30", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    from nexlify.data.market import load_ohlcv

    frame = load_ohlcv(out)
    assert 719 <= len(frame) <= 720  # 30 days of closed hourly candles, across many 500-row pages
    assert frame.index[-1] - frame.index[0] < pd.Timedelta(days=30)


def test_batch_override_keeps_the_planned_replay_ratio():
    from nexlify.cli import build_parser, resolve_config
    from nexlify.config import TrainingConfig

    planned = TrainingConfig(batch_size=256, train_frequency=32, target_update_interval=62)
    args = build_parser().parse_args(["train", "--batch-size", "64"])
    config, overrides = resolve_config(args, planned)
    assert config.batch_size == 64 and config.train_frequency == 8
    assert config.replay_ratio == planned.replay_ratio
    assert config.target_update_interval == 248  # still ~1,984 transitions between target refreshes


@pytest.mark.parametrize(("content", "message"), [("[1, 2]", "JSON object"), ("{nope", "not valid JSON")])
def test_config_file_that_is_not_an_object_is_refused(tmp_path, capsys, content, message):
    config = tmp_path / "config.json"
    config.write_text(content)
    assert main(["train", "--config", str(config), "--checkpoint-dir", str(tmp_path / "m")]) == 2
    assert message in capsys.readouterr().err


def test_requirements_txt_installs_this_project_with_extras_that_exist():
    """The guide's `pip install -r requirements.txt` step: the file names this project and real extras."""
    import re

    root = Path(__file__).resolve().parents[1]
    lines = [ln for ln in (root / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1 and (match := re.fullmatch(r"-e \.\[([\w,]+)\]", lines[0]))
    table = (root / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^(\w+) = \[", table, flags=re.M))
    assert {"exchange", "parquet", "compression", "gpu", "dev"} <= extras
    assert set(match.group(1).split(",")) <= extras


def test_train_on_several_markets_pools_them_into_one_policy(tmp_path, capsys):
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    synthetic_frame(400, seed=5).to_csv(files[0])
    cheap = synthetic_frame(300, seed=6)
    cheap[["open", "high", "low", "close"]] *= 0.01  # another price level: the features are scale-free
    cheap.to_csv(files[1])
    out = tmp_path / "models"
    code = main(["train", "--data", *map(str, files), "--episodes", "2", "--save-interval", "2", "--data-days", "30",
                 "--model-size", "tiny", "--batch-size", "16", "--parallel-envs", "2", "--checkpoint-dir", str(out),
                 "--quiet"])
    assert code == 0
    results = json.loads((out / "training_results.json").read_text())
    # Each market is split on its own (70/15/15 of its rows after the 48-bar warm-up), then joined.
    assert results["run"]["rows"]["train"] == int(352 * 0.7) + int(252 * 0.7)
    assert results["run"]["transitions"] == 2 * (int(352 * 0.7) + int(252 * 0.7) - 1)
    capsys.readouterr()
    # Several files cannot be found again from one origin: evaluate asks for --data.
    assert main(["evaluate", "--model", str(out / "best_model.pth"), "--out", str(tmp_path / "eval")]) == 2
    assert "trained on several markets" in capsys.readouterr().err


def test_train_several_seeds_leaves_each_run_and_their_ensemble(tmp_path, capsys):
    import torch

    from nexlify.agent.dqn import AdaptiveDQNAgent

    data = tmp_path / "candles.csv"
    synthetic_frame(500, seed=3).to_csv(data)
    out = tmp_path / "models"
    common = ["--data", str(data), "--episodes", "2", "--save-interval", "2", "--data-days", "30", "--model-size",
              "tiny", "--batch-size", "16", "--parallel-envs", "2", "--checkpoint-dir", str(out), "--quiet"]
    assert main(["train", *common, "--seed", "7"]) == 0  # a single run first: seed runs replace it only
    capsys.readouterr()                                     # when told to, and never sit beside it
    assert main(["train", *common, "--seed", "7", "--seeds", "2"]) == 2
    assert "already holds a previous run" in capsys.readouterr().err and (out / "best_model.pth").is_file()
    assert main(["train", *common, "--seed", "7", "--seeds", "2", "--overwrite", "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "2 episodes x 2 seeds, one after another" in captured.err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["ensemble", "seed_7", "seed_8"]
    runs = [out / "seed_7", out / "seed_8"]
    for seed, run in zip((7, 8), runs, strict=True):
        assert json.loads((run / "training_results.json").read_text())["config"]["seed"] == seed
    first, second = (AdaptiveDQNAgent.from_checkpoint(run / "best_model.pth").q_network.state_dict() for run in runs)
    assert any(not torch.equal(first[name], second[name]) for name in first)  # two seeds, two models
    # The ensemble's backtest is `nexlify evaluate` of the two best models, to the digit.
    ensemble = json.loads((out / "ensemble" / "evaluation_results.json").read_text())
    assert main(["evaluate", "--model", *(str(run / "best_model.pth") for run in runs), "--out",
                 str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "evaluation_results.json").read_text())["test"] == ensemble["test"]
    assert f"trade them together: nexlify trade --model {runs[0] / 'best_model.pth'}" in printed
    # Refused before anything is measured or written: a rerun over them, and --resume with --seeds.
    before = (runs[0] / "best_model.pth").read_bytes()
    capsys.readouterr()
    assert main(["train", *common, "--seed", "7", "--seeds", "2"]) == 2
    assert "already holds a previous run" in capsys.readouterr().err
    assert main(["train", *common, "--seeds", "2", "--resume", str(runs[0] / "final_model.pth")]) == 2
    assert "resume each seed's run on its own" in capsys.readouterr().err
    assert (runs[0] / "best_model.pth").read_bytes() == before


def test_seeds_trained_side_by_side_are_the_seeds_trained_one_after_another(tmp_path, capsys):
    import torch

    from nexlify.agent.dqn import AdaptiveDQNAgent

    data, settings = tmp_path / "candles.csv", tmp_path / "one_thread.json"
    synthetic_frame(500, seed=3).to_csv(data)
    # The same threads either way (the same arithmetic), and learning from the first batches on.
    settings.write_text(json.dumps({"num_workers": 1, "learning_starts": 32}))
    common = ["--data", str(data), "--episodes", "2", "--save-interval", "2", "--data-days", "30", "--model-size",
              "tiny", "--batch-size", "16", "--parallel-envs", "2", "--config", str(settings), "--seed", "7",
              "--seeds", "2", "--quiet"]
    assert main(["train", *common, "--jobs", "1", "--checkpoint-dir", str(tmp_path / "turns")]) == 0
    assert "x 2 seeds, one after another" in capsys.readouterr().err
    assert main(["train", *common, "--jobs", "2", "--checkpoint-dir", str(tmp_path / "together")]) == 0
    captured = capsys.readouterr()
    assert "x 2 seeds, 2 at once (as asked), 1 torch thread(s) each" in captured.err
    assert captured.out.count("training summary") == 2 and "seeds' best models as one mean-Q ensemble" in captured.out
    for seed in (7, 8):
        turns, together = (json.loads((tmp_path / run / f"seed_{seed}" / "training_results.json").read_text())
                           for run in ("turns", "together"))
        assert together["config"]["seed"] == seed and together["validation"] == turns["validation"]
        rewards = [[e["reward"] for e in run["episodes"]] for run in (turns, together)]
        assert rewards[0] == rewards[1] and together["episodes"][-1]["performance"]["updates"] > 0
        first, second = (AdaptiveDQNAgent.from_checkpoint(tmp_path / run / f"seed_{seed}" / "best_model.pth")
                         .q_network.state_dict() for run in ("turns", "together"))
        assert all(torch.equal(first[name], second[name]) for name in first)
    ensembles = [json.loads((tmp_path / run / "ensemble" / "evaluation_results.json").read_text())["test"]
                 for run in ("turns", "together")]
    assert ensembles[0] == ensembles[1]
    assert main(["train", "--data", str(data), "--jobs", "2", "--checkpoint-dir", str(tmp_path / "one")]) == 2
    assert "give --seeds N as well" in capsys.readouterr().err and not (tmp_path / "one").exists()


@pytest.mark.parametrize(("stop_signal", "code"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 130)])
def test_a_stop_signal_saves_every_seed_running_side_by_side_and_starts_no_other(tmp_path, stop_signal, code):
    import signal
    import time

    from nexlify.training.trainer import INTERRUPTED_CHECKPOINT

    data = tmp_path / "candles.csv"
    synthetic_frame(1500, seed=3).to_csv(data)
    out = tmp_path / "models"
    # Three seeds, two at a time, far more episodes than the test waits for: the signal finds two started
    # (perhaps not yet in their loops: a stop that arrives early waits for the loop) and the third queued.
    # Only the parent is signalled (Ctrl-C reaches it alone: the seeds run in their own process group),
    # and it passes the signal on once.
    process = subprocess.Popen([sys.executable, "-m", "nexlify.cli", "train", "--data", str(data), "--episodes",
                                "100000", "--data-days", "60", "--model-size", "tiny", "--batch-size", "16",
                                "--parallel-envs", "2", "--seeds", "3", "--jobs", "2", "--quiet",
                                "--checkpoint-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    running = [out / "seed_42" / "hardware_profile.json", out / "seed_43" / "hardware_profile.json"]
    while not all(p.exists() for p in running) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(getattr(signal, stop_signal))
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-500:]
    for seed in (42, 43):
        saved = out / f"seed_{seed}" / INTERRUPTED_CHECKPOINT
        assert saved.is_file() and f"interrupted: saved {saved}; continue with --resume {saved}" in err
    assert not (out / "seed_44").exists() and "Traceback" not in err
