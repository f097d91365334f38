"""The ``nexlify`` command: train | evaluate | walkforward | sweep | trade | profile | download.

User mistakes (bad flags, bad data, bad files) print one line starting with ``error:`` and exit with
code 2; no traceback. Ctrl-C (SIGINT) or SIGTERM during training saves a checkpoint and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from nexlify.distributed.cluster import LOCAL as LOCAL_RAY
from nexlify.errors import ConfigError, NexlifyError
from nexlify.io import check_input_file, check_model_files

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM, what kill, systemd and container runtimes expect back


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


# --- shared flag types: each checks a flag with the same rules as its config key -------------
def config_flag(key: str, parse: type = int) -> Any:
    """An argparse ``type`` that parses a flag and checks it with config key ``key``'s rules, so
    ``--seed -1`` is refused by the same rule as ``{"seed": -1}`` in a config file."""
    from nexlify.config import check_value

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            kind = "a whole number" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check_value(key, value, label="")
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = key  # argparse names the type in some messages
    return convert


def positive_number(text: str) -> float:
    """An argparse ``type`` for a finite number above 0 (amounts and speeds that no config key holds)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# --- shared flag groups (train, evaluate and later subcommands reuse them) ------------------
def add_data_flags(parser: argparse.ArgumentParser, days: bool = True) -> None:
    """--data / --exchange / --symbol / --timeframe (and --data-days)."""
    parser.add_argument("--data", metavar="FILE", nargs="+",
                        help="OHLCV CSV/Parquet file(s) (default: bundled BTC/USDT 1h); several files train one "
                             "policy on all of those markets")
    if days:
        parser.add_argument("--data-days", type=config_flag("data_days"),
                            help="use the most recent N days of data (default 180)")
    parser.add_argument("--exchange", help="download candles from this ccxt exchange first (e.g. binance)")
    parser.add_argument("--symbol", default=None, help="market symbol for --exchange (default BTC/USDT)")
    parser.add_argument("--timeframe", default=None, help="candle timeframe for --exchange (default 1h)")


def add_plan_flags(parser: argparse.ArgumentParser, seed_help: str, quiet_help: str) -> None:
    """The flags that override the hardware plan, shared by train and walkforward (and --quiet)."""
    from nexlify.config import MODEL_SIZES

    parser.add_argument("--balance", type=config_flag("initial_balance", float),
                        help="initial balance in quote currency (default 10000)")
    parser.add_argument("--model-size", choices=MODEL_SIZES, help="override the planned model size")
    parser.add_argument("--batch-size", type=config_flag("batch_size"), help="override the planned batch size")
    parser.add_argument("--seed", type=config_flag("seed"), help=seed_help)
    add_device_flag(parser, help_text="override the planned device: cpu, cuda, cuda:N or mps")
    parser.add_argument("--parallel-envs", type=config_flag("parallel_envs"),
                        help="override the planned parallel environments")
    parser.add_argument("--config", metavar="FILE", help="JSON file of config keys applied over the plan")
    parser.add_argument("--reprofile", action="store_true", help="measure the hardware again, ignoring the cache")
    parser.add_argument("--quiet", action="store_true", help=quiet_help)


def add_run_folder_flags(parser: argparse.ArgumentParser, default: str = "models/adaptive_rl") -> None:
    """--checkpoint-dir and --overwrite: where a run writes, and permission to replace an old run."""
    parser.add_argument("--checkpoint-dir", default=default, help=f"where every output goes (default {default})")
    parser.add_argument("--overwrite", action="store_true", help="delete a previous run's outputs in "
                        "--checkpoint-dir first (without it such a folder is refused)")


def check_data_flags(args: argparse.Namespace) -> None:
    """One data source, and download options only with a download."""
    if args.data and args.exchange:
        raise ConfigError("--data and --exchange both name a data source; give one of them")
    if (args.symbol or args.timeframe) and not args.exchange:
        raise ConfigError("--symbol and --timeframe need --exchange (or use --data FILE)")
    for path in args.data or ():
        check_input_file("--data", path)


def check_output_dir(flag: str, path: str | Path) -> Path:
    """``path`` if it is a folder that exists or can be created and written, else ConfigError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a folder; choose a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path} is inside {existing}, which is a file; choose a folder path")
    try:  # os.access says yes to root on /proc; only a real write tells
        os.rmdir(tempfile.mkdtemp(prefix=".nexlify-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None
    return path


def add_device_flag(parser: argparse.ArgumentParser, default: str | None = None, help_text: str = "") -> None:
    parser.add_argument("--device", default=default, type=_device_flag,
                        help=help_text or "device: cpu, cuda, cuda:N or mps")


def _device_flag(text: str) -> str:
    try:
        _check_device(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--device ")) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nexlify", description="Adaptive deep-RL trading agent that plans itself for your hardware.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train on market data with a plan fitted to this machine")
    train.add_argument("--episodes", type=config_flag("episodes"), help="episodes to train (one pass of one "
                       "account over the training split each; default 1000)")
    add_run_folder_flags(train)
    train.add_argument("--save-interval", type=config_flag("save_interval"),
                       help="episodes between checkpoint_ep{N}.pth (default 50)")
    add_data_flags(train)
    train.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                       help="continue from a checkpoint (no PATH: the newest in --checkpoint-dir)")
    add_plan_flags(train, seed_help="random seed, 0 to 2**32-1 (default 42)", quiet_help="no progress display")
    train.add_argument("--tensorboard", action="store_true", help="log scalars to CHECKPOINT_DIR/tensorboard")
    train.add_argument("--seeds", type=_positive(int), default=1,
                       help="train N runs (SEED, SEED+1, ...) into CHECKPOINT_DIR/seed_S and backtest their best "
                       "models as one mean-Q ensemble into CHECKPOINT_DIR/ensemble (default 1: one run)")
    train.add_argument("--jobs", type=_positive(int),
                       help="with --seeds: runs trained at once (default: on a CPU the count that finishes "
                       "soonest at the measured loop speeds; on a GPU one)")

    evaluate = sub.add_parser("evaluate", help="backtest a saved model against the baselines")
    evaluate.add_argument("--model", required=True, metavar="PATH", nargs="+",
                          help="a .pth file written by nexlify train; several files are backtested as one mean-Q "
                          "ensemble (as nexlify trade would trade them)")
    evaluate.add_argument("--data", metavar="FILE", help="data to backtest on (default: the held-out test "
                          "split of the model's training data)")
    evaluate.add_argument("--out", metavar="DIR", help="output folder (default: MODEL_DIR/evaluation)")
    add_device_flag(evaluate, default="cpu", help_text="device to run the model on (default cpu)")

    trade = sub.add_parser("trade", help="run a trained model on a market: paper trading by default, --live "
                           "for real orders; --report shows a session's results")
    trade.add_argument("--model", metavar="PATH", nargs="+",
                       help="a .pth file written by nexlify train (e.g. best_model.pth); several files trade as "
                       "one mean-Q ensemble (e.g. the best models of runs with other --seed values)")
    trade.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    trade.add_argument("--symbol", default="BTC/USDT", help="market symbol (default BTC/USDT)")
    trade.add_argument("--timeframe", default="1h", help="candle timeframe (default 1h)")
    trade.add_argument("--balance", type=config_flag("initial_balance", float),
                       help="quote currency the session trades with (default: the model's initial balance)")
    trade.add_argument("--journal", metavar="FILE", help="SQLite journal to write or resume (default: "
                       "MODEL_DIR/trading/<mode>_<market>.sqlite)")
    mode = trade.add_mutually_exclusive_group()
    mode.add_argument("--paper", action="store_true", help="simulated fills with the backtest's costs (default)")
    mode.add_argument("--live", action="store_true", help="REAL market orders; needs --confirm-live, "
                      "--max-position and NEXLIFY_API_KEY / NEXLIFY_API_SECRET in the environment")
    trade.add_argument("--confirm-live", action="store_true", help="confirm that --live may place real orders")
    trade.add_argument("--sandbox", action="store_true", help="with --live: use the exchange's sandbox/testnet")
    trade.add_argument("--max-position", type=positive_number, metavar="AMOUNT",
                       help="most quote currency held in the market at once (required with --live)")
    trade.add_argument("--feed", metavar="FILE", help="replay this CSV/Parquet file as the market (rehearsal)")
    trade.add_argument("--speed", type=positive_number, help="replay at this many times real time (default: "
                       "as fast as possible)")
    trade.add_argument("--report", action="store_true", help="print the metrics of --journal FILE and write "
                       "its equity chart")
    trade.add_argument("--chart", metavar="PNG", help="with --report: where the chart goes (default: the "
                       "journal's name with .png)")
    add_device_flag(trade, default="cpu", help_text="device to run the model on (default cpu)")

    _add_walkforward_parser(sub)
    _add_sweep_parser(sub)

    profile = sub.add_parser("profile", help="show the detected hardware and the training plan with reasons")
    profile.add_argument("--json", action="store_true", help="print JSON instead of tables")
    profile.add_argument("--reprofile", action="store_true", help="measure again, ignoring the cache")
    profile.add_argument("--output-dir", default=".", help="folder whose disk is profiled (default .)")

    download = sub.add_parser("download", help="download OHLCV candles from an exchange (ccxt) to a file")
    download.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    download.add_argument("--symbol", default="BTC/USDT", help="market symbol (default BTC/USDT)")
    download.add_argument("--timeframe", default="1h", help="candle timeframe (default 1h)")
    download.add_argument("--days", type=config_flag("data_days"), default=180, help="days of history (default 180)")
    download.add_argument("--out", metavar="FILE", help="write to this CSV/Parquet file (default: print "
                          "where the cache file is)")
    return parser


def _positive(parse: type) -> Any:
    """An argparse ``type`` for a walk-forward count or length (not a config key): above zero."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            kind = "whole number" if parse is int else "number"
            raise argparse.ArgumentTypeError(f"expected a positive {kind}, got {text!r}")
        return value

    return convert


def _add_walkforward_parser(sub: Any) -> None:
    wf = sub.add_parser("walkforward", help="train and test on many unseen windows, markets and seeds; "
                        "an honest verdict against buy-and-hold")
    _add_walkforward_options(wf, "models/walkforward")
    from nexlify.evaluation.defaults import DEFAULT_MODEL_CHOICE
    from nexlify.evaluation.snapshots import MODEL_CHOICES

    wf.add_argument("--model-choice", choices=MODEL_CHOICES, default=None,
                    help="which validated models of each seed the ensemble combines: best (each seed's best on "
                    "validation), top2, last (each seed's final model; no choice on validation), or all (every "
                    f"validated snapshot) (default {DEFAULT_MODEL_CHOICE}; best with --ensemble none, which "
                    "judges each seed alone)")
    wf.add_argument("--jobs", type=_positive(int), help="jobs run at once (default: from the hardware; with "
                    "--ray: at most this many over the whole cluster)")
    _add_ray_options(wf, default=None, what="every (market, fold, seed) as a Ray task")


def _add_sweep_parser(sub: Any) -> None:
    sweep = sub.add_parser("sweep", help="search config keys with Ray Tune on walk-forward validation windows, "
                           "then one test verdict for the best config")
    sweep.add_argument("--space", required=True, metavar="FILE", help='JSON file of config keys to search, e.g. '
                       '{"learning_rate": {"loguniform": [1e-5, 1e-3]}, "n_step": {"choice": [1, 3, 5]}} '
                       "(choice, uniform, loguniform, randint)")
    sweep.add_argument("--trials", type=_positive(int), required=True, help="configs to try")
    _add_walkforward_options(sweep, "models/sweep")
    _add_ray_options(sweep, default=LOCAL_RAY, what="the sweep's trials")


def _add_ray_options(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    parser.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=default, metavar="ADDRESS",
                        help=f"run {what} on Ray: alone, a local Ray on this machine; auto or HOST:PORT, a running "
                        'cluster (needs pip install "nexlify[distributed]")')
    parser.add_argument("--trials-per-gpu", type=_positive(int), help="trials sharing one GPU on Ray (default: as "
                        "many as its free memory holds, at most 4)")


def _add_walkforward_options(wf: argparse.ArgumentParser, default_dir: str) -> None:
    """The walk-forward's flags, shared by ``walkforward`` and ``sweep``."""
    from nexlify.evaluation.defaults import (
        DEFAULT_ENSEMBLE,
        DEFAULT_EPISODES,
        DEFAULT_POOL,
        DEFAULT_SEEDS,
        DEFAULT_TEST_DAYS,
        DEFAULT_TRAIN_DAYS,
        DEFAULT_VALIDATION_DAYS,
        ENSEMBLE_MODES,
    )

    wf.add_argument("--data", metavar="FILE", nargs="+", help="one OHLCV file per market (default: bundled "
                    "BTC/USDT 1h)")
    windows = wf.add_mutually_exclusive_group()
    windows.add_argument("--folds", type=_positive(int), help="split the history after the first training and "
                         "validation windows into K equal test windows")
    windows.add_argument("--test-days", type=_positive(float), help=f"length of each test window; as many folds "
                         f"as the history holds (default {DEFAULT_TEST_DAYS})")
    wf.add_argument("--train-days", type=_positive(float), default=DEFAULT_TRAIN_DAYS,
                    help=f"training window of each fold (default {DEFAULT_TRAIN_DAYS})")
    wf.add_argument("--validation-days", type=_positive(float), default=DEFAULT_VALIDATION_DAYS,
                    help=f"model-selection window right after training (default {DEFAULT_VALIDATION_DAYS})")
    wf.add_argument("--anchored", action="store_true", help="every fold trains from the start of the history "
                    "(default: a rolling window of --train-days)")
    wf.add_argument("--common-period", action="store_true", help="with several --data markets: lay the folds "
                    "only in the period every market covers (default: over all of their history, each market "
                    "trained and tested on the folds its history covers)")
    wf.add_argument("--seeds", type=_positive(int), default=DEFAULT_SEEDS,
                    help=f"seeds per fold: SEED, SEED+1, ... (default {DEFAULT_SEEDS})")
    wf.add_argument("--pool", action=argparse.BooleanOptionalAction, default=DEFAULT_POOL,
                    help="with several --data markets: train one policy per fold and seed on all of them and test "
                    f"it on each (--no-pool: one policy per market; default {'pool' if DEFAULT_POOL else 'no-pool'})")
    wf.add_argument("--ensemble", choices=(*ENSEMBLE_MODES, "none"), default=DEFAULT_ENSEMBLE,
                    help="judge a fold's seeds as one policy: mean_q (their averaged Q-values), vote, or none (the "
                    f"mean of the seeds' results) (default {DEFAULT_ENSEMBLE})")
    wf.add_argument("--episodes", type=config_flag("episodes"),
                    help=f"episodes per fold and seed (default {DEFAULT_EPISODES})")
    wf.add_argument("--checkpoint-dir", default=default_dir, help="where every output goes; run again "
                    f"with the same folder to resume (default {default_dir})")
    add_plan_flags(wf, seed_help="first seed (default 42)", quiet_help="no progress lines")
    wf.set_defaults(data_days=None, save_interval=None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    console = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        handler = {"train": _train, "evaluate": _evaluate, "walkforward": _walkforward, "sweep": _sweep,
                   "trade": _trade, "profile": _profile, "download": _download}
        return handler[args.command](args, console)
    except NexlifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        # The machine refused a read or write (disk full, permissions, a folder vanished). Writes are
        # atomic, so every file written before is still whole.
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}; free disk space or fix the permissions, or choose "
              "another folder (files written before are intact)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        # A training run has already said where its checkpoint went; anything else just stops.
        signal_name = getattr(interrupt, "signal_name", None)
        if signal_name is None:
            print("interrupted", file=sys.stderr)
        return EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config keys set by explicit flags (a flag left out leaves the plan alone)."""
    flag_to_key = {
        "episodes": "episodes", "data_days": "data_days", "balance": "initial_balance",
        "model_size": "model_size", "batch_size": "batch_size", "save_interval": "save_interval",
        "seed": "seed", "device": "device", "parallel_envs": "parallel_envs",
    }
    return {key: getattr(args, flag) for flag, key in flag_to_key.items() if getattr(args, flag) is not None}


def resolve_config(args: argparse.Namespace, planned: Any, file_values: dict[str, Any] | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """Plan, then the --config file's values, then explicit flags. Returns (config, overrides applied)."""
    overrides: dict[str, Any] = dict(file_values or {})
    overrides.update(_config_overrides(args))
    device = overrides.get("device")
    if device is not None:
        _check_device(device)
        if str(device).startswith("cpu") and "precision" not in overrides:
            # Mixed precision was planned for the GPU; the CPU runs fp32.
            overrides.setdefault("use_mixed_precision", False)
    overrides.update(_keep_learning_pace(planned, overrides))
    return planned.with_overrides(overrides), overrides


def _keep_learning_pace(planned: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """A new batch keeps the plan's replay ratio and target-refresh spacing (in transitions).

    Without this, --batch-size 512 on a plan of 64 every 8 transitions would do 8x the gradient
    work per transition.
    """
    if not {"batch_size", "gradient_accumulation_steps"} & overrides.keys() or "train_frequency" in overrides:
        return {}
    effective = overrides.get("batch_size", planned.batch_size) * overrides.get(
        "gradient_accumulation_steps", planned.gradient_accumulation_steps)
    train_frequency = max(1, round(effective / planned.replay_ratio))
    derived = {"train_frequency": train_frequency}
    if "target_update_interval" not in overrides:
        refresh_transitions = planned.target_update_interval * planned.train_frequency
        derived["target_update_interval"] = max(1, round(refresh_transitions / train_frequency))
    return derived


def _check_device(device: str) -> None:
    from nexlify.devices import require_device

    require_device(device, label="--device")


def _latest_checkpoint(folder: Path) -> Path:
    """The most recently written checkpoint_*.pth (periodic or interrupted) in ``folder``."""
    candidates = list(folder.glob("checkpoint_*.pth")) if folder.is_dir() else []
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint_*.pth in {folder}; give the checkpoint path")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _validated_overrides(file_values: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """The --config file's keys and the flags, each checked (type, range, finite) before anything runs."""
    from nexlify.config import TrainingConfig

    overrides = {**(file_values or {}), **_config_overrides(args)}
    TrainingConfig().with_overrides(overrides)  # raises ConfigError naming the first bad key
    if "device" in overrides:
        _check_device(overrides["device"])
    return overrides


def _train(args: argparse.Namespace, console: Console) -> int:
    from nexlify.config import MAX_SEED, TrainingConfig, read_config_file
    from nexlify.training.pipeline import load_training_data, resume_checks, run_training
    from nexlify.training.run_folder import RunFolderLock, check_previous_run, previous_run_outputs, remove_previous_run
    from nexlify.training.seed_runs import seeds_at_once
    from nexlify.training.trainer import INTERRUPTED_CHECKPOINT, accounts_per_round, available_memory_gb

    # Everything the user gave is checked first: flags, files, config, data; then the hardware is
    # measured, and only then is a folder created or written.
    check_data_flags(args)
    output_dir = check_output_dir("--checkpoint-dir", args.checkpoint_dir)
    resume = None
    if args.resume:
        resume = _latest_checkpoint(output_dir) if args.resume == "latest" else check_input_file("--resume",
                                                                                                  args.resume)
    check_previous_run(output_dir, resume=resume is not None and _same_folder(resume.parent, output_dir),
                       overwrite=args.overwrite)
    file_values = read_config_file(args.config) if args.config else None
    early = _validated_overrides(file_values, args)
    seeds = [early.get("seed", TrainingConfig().seed) + i for i in range(args.seeds)]
    if args.jobs is not None and len(seeds) == 1:
        raise ConfigError("--jobs sets how many seeds train at once; give --seeds N as well")
    if len(seeds) > 1:
        if resume is not None:
            raise ConfigError("--resume continues one run; resume each seed's run on its own (--checkpoint-dir "
                              "CHECKPOINT_DIR/seed_S --resume) and drop --seeds")
        if seeds[-1] > MAX_SEED:
            raise ConfigError(f"--seed {seeds[0]} with --seeds {len(seeds)} runs past the largest seed {MAX_SEED}")
        for seed in seeds:
            check_previous_run(output_dir / f"seed_{seed}", resume=False, overwrite=args.overwrite)
    if resume is not None:  # exactly the checkpoint's data and set-up, or a refusal
        if args.data and len(args.data) > 1:
            raise ConfigError("--resume continues on one market's recorded data; a run on several --data files "
                              "cannot be resumed yet (start it again)")
        splits, episodes = resume_checks(resume, early, args.data[0] if args.data else None, args.exchange)
    else:
        splits = load_training_data(args.data, early.get("data_days", TrainingConfig().data_days), args.exchange,
                                    args.symbol, args.timeframe, early.get("feature_set", TrainingConfig().feature_set),
                                    early.get("augment", TrainingConfig().augment))

    from nexlify.hardware.profiler import HardwareProfiler

    profiler = HardwareProfiler(output_dir=str(output_dir), reprofile=args.reprofile)
    config, overrides = resolve_config(args, profiler.config, file_values)
    if resume is not None:
        config = config.with_overrides({"episodes": episodes})
    at_once, why_at_once = 1, ""
    if len(seeds) > 1:
        profile = profiler.profile or {}
        at_once, threads, why_at_once = seeds_at_once(config, len(seeds),
                                                      int((profile.get("cpu") or {}).get("usable_cores") or 1),
                                                      available_memory_gb(), args.jobs, _loop_rates(profile, config))
        config = config.with_overrides({"num_workers": threads})
    if resume is None:
        console.print(f"[bold]Nexlify[/bold]: {config.model_size} model on {config.device}, batch "
                      f"{config.batch_size} x {config.gradient_accumulation_steps}, "
                      f"{accounts_per_round(config)} parallel envs, {config.episodes} episodes"
                      + (f" x {len(seeds)} seeds, {why_at_once}" if len(seeds) > 1 else "") + f" -> {output_dir}",
                      soft_wrap=True)
    else:  # the learning settings are the checkpoint's, not this machine's plan
        console.print(f"[bold]Nexlify[/bold]: resuming {resume} up to {config.episodes} episodes on {config.device} "
                      f"-> {output_dir}", soft_wrap=True)
    run_dirs = [output_dir] if len(seeds) == 1 else [output_dir / f"seed_{seed}" for seed in seeds]
    if len(seeds) > 1 and args.overwrite and previous_run_outputs(output_dir):
        with RunFolderLock(output_dir):  # a single run replaced by seed runs: the folder never mixes them
            remove_previous_run(output_dir)
    if at_once > 1:
        runs = [{"config": config.with_overrides({"seed": seed}), "splits": splits, "output_dir": run_dir,
                 "profile": profiler.profile, "reasons": [*profiler.explain(), f"seeds: {why_at_once}"],
                 "overrides": {**overrides, "seed": seed}, "tensorboard": args.tensorboard,
                 "overwrite": args.overwrite} for seed, run_dir in zip(seeds, run_dirs, strict=True)]
        _train_side_by_side(runs, at_once, console)
        _evaluate_seed_ensemble(run_dirs, output_dir / "ensemble")
        return 0
    for number, (seed, run_dir) in enumerate(zip(seeds, run_dirs, strict=True), start=1):
        if len(seeds) > 1:
            console.print(f"[bold]seed {seed}[/bold] ({number} of {len(seeds)}) -> {run_dir}", soft_wrap=True)
        started = time.time()
        try:
            results = run_training(config.with_overrides({"seed": seed}), splits=splits, output_dir=run_dir,
                                   profile=profiler.profile, reasons=profiler.explain(),
                                   overrides=overrides if len(seeds) == 1 else {**overrides, "seed": seed},
                                   resume_from=resume, tensorboard=args.tensorboard, console=console,
                                   quiet=args.quiet, overwrite=args.overwrite)
        except KeyboardInterrupt:
            saved = run_dir / INTERRUPTED_CHECKPOINT
            # Said even with --quiet (then the trainer's own display is silent): it is the only way back
            # into the run.
            if args.quiet and saved.exists() and saved.stat().st_mtime >= started:
                print(f"interrupted: saved {saved}; continue with --resume {saved}", file=sys.stderr)
            raise
        print((run_dir / "training_summary.txt").read_text())
        run = results["run"]
        console.print(f"done: {run['episodes_done']} episode(s) in {run['train_seconds']:.0f} s; outputs in "
                      f"{run_dir}", soft_wrap=True)
    if len(seeds) > 1:
        _evaluate_seed_ensemble(run_dirs, output_dir / "ensemble")
    return 0


def _loop_rates(profile: dict[str, Any] | None, config: Any) -> dict[int, float]:
    """The profile's measured loop speeds of the planned setting, transitions/s by torch threads."""
    from nexlify.hardware.measurements import Measurements

    return Measurements.from_dict((profile or {}).get("benchmarks")).by_threads(config.device, config.model_size,
                                                                               config.batch_size)


def _train_side_by_side(runs: list[dict[str, Any]], at_once: int, console: Console) -> None:
    """Train the seeds' runs in ``at_once`` processes, printing each run's summary as it finishes."""
    from nexlify.training.seed_runs import train_seeds_side_by_side
    from nexlify.training.trainer import INTERRUPTED_CHECKPOINT

    started = time.time()
    try:
        for finished, (kwargs, run) in enumerate(train_seeds_side_by_side(runs, at_once), start=1):
            run_dir = Path(kwargs["output_dir"])
            print((run_dir / "training_summary.txt").read_text())
            console.print(f"done: seed {kwargs['config'].seed} ({finished} of {len(runs)}): {run['episodes_done']} "
                          f"episode(s) in {run['train_seconds']:.0f} s; outputs in {run_dir}", soft_wrap=True)
    except KeyboardInterrupt:
        for kwargs in runs:  # each run still training saved where it stopped
            saved = Path(kwargs["output_dir"]) / INTERRUPTED_CHECKPOINT
            if saved.exists() and saved.stat().st_mtime >= started:
                print(f"interrupted: saved {saved}; continue with --resume {saved}", file=sys.stderr)
        raise


def _evaluate_seed_ensemble(run_dirs: list[Path], out: Path) -> None:
    """The seeds' best models as one mean-Q ensemble on their held-out test split (``nexlify evaluate``)."""
    from nexlify.evaluation.report import metrics_table
    from nexlify.training.pipeline import evaluate_model
    from nexlify.training.trainer import BEST_MODEL

    models = [run_dir / BEST_MODEL for run_dir in run_dirs]
    results = evaluate_model(models, out_dir=out, device="cpu")  # backtests act on the host anyway
    print(f"The {len(models)} seeds' best models as one mean-Q ensemble, on {results['data']} "
          f"({results['rows']} rows)\n" + metrics_table(results["test"]) + "\n\n" + results["verdict"])
    print(f"outputs in {out}; trade them together: nexlify trade --model {' '.join(map(str, models))}")


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from nexlify.evaluation.report import metrics_table
    from nexlify.training.pipeline import evaluate_model

    models = check_model_files(args.model)
    if args.data:
        check_input_file("--data", args.data)
    out = check_output_dir("--out", args.out) if args.out else None
    results = evaluate_model(models[0] if len(models) == 1 else models, data=args.data, out_dir=out,
                             device=args.device)
    what = "" if len(models) == 1 else f"of the mean-Q ensemble of {len(models)} models "
    print(f"Backtest {what}on {results['data']} ({results['rows']} rows)\n" + metrics_table(results["test"])
          + "\n\n" + results["verdict"])
    return 0


def _trade(args: argparse.Namespace, console: Console) -> int:
    if args.report:
        return _trade_report(args)
    if args.chart:
        raise ConfigError("--chart goes with --report; add --report or drop --chart")
    if not args.model:
        raise ConfigError("trade needs --model PATH (a .pth file written by nexlify train), or --report "
                          "--journal FILE")
    from nexlify.trading.runner import TradeOptions, run_trade

    options = TradeOptions(
        model=Path(args.model[0]), ensemble=tuple(Path(path) for path in args.model[1:]),
        exchange=args.exchange, symbol=args.symbol, timeframe=args.timeframe,
        balance=args.balance, journal=Path(args.journal) if args.journal else None, live=args.live,
        confirm_live=args.confirm_live, sandbox=args.sandbox, feed=Path(args.feed) if args.feed else None,
        speed=args.speed, max_position=args.max_position, device=args.device)
    try:
        summary = run_trade(options, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("stopped; the journal is intact: run the same command to resume", file=sys.stderr)
        raise
    console.print(f"session ended: {summary['traded']} candle(s) traded, {summary['missed']} missed, equity "
                  f"{summary['equity']:,.2f}; journal {summary['journal']} (see nexlify trade --report "
                  "--journal FILE)", soft_wrap=True)
    return 0


def _trade_report(args: argparse.Namespace) -> int:
    from nexlify.trading.report import report_text, session_report, write_equity_chart

    if not args.journal:
        raise ConfigError("--report needs --journal FILE (the journal a trade session wrote)")
    report = session_report(args.journal)
    chart = Path(args.chart) if args.chart else Path(args.journal).with_suffix(".png")
    write_equity_chart(chart, report)
    print(report_text(report) + f"\nEquity chart: {chart}")
    return 0


@dataclass
class _WalkforwardPlan:
    """A walk-forward planned from the flags: its jobs, config, the keys the user set, and how it runs here."""

    jobs: list[Any]
    config: Any
    overrides: dict[str, Any]
    profiler: Any
    at_once: int
    why: str


def _plan_walkforward(args: argparse.Namespace, output_dir: Path) -> _WalkforwardPlan:
    from nexlify.config import TrainingConfig, read_config_file
    from nexlify.evaluation.defaults import DEFAULT_EPISODES, WALKFORWARD_LEARNING
    from nexlify.evaluation.walkforward import (
        VALIDATIONS_PER_RUN,
        assign_config,
        parallel_plan,
        plan_jobs,
    )
    from nexlify.training.trainer import available_memory_gb

    # Flags, files, config and data windows are all checked before the hardware is measured.
    data = [check_input_file("--data", path) for path in args.data] if args.data else [None]
    file_values = read_config_file(args.config) if args.config else None
    early = _validated_overrides(file_values, args)
    seeds = [early.get("seed", TrainingConfig().seed) + i for i in range(args.seeds)]
    # The windows are checked against what every job will learn with (the validated settings under the
    # user's): the feature warm-up and the mirror's candles decide how much history a fold needs.
    jobs = plan_jobs(data, output_dir, {**WALKFORWARD_LEARNING, **early}, seeds, test_days=args.test_days,
                     folds=args.folds, train_days=args.train_days, validation_days=args.validation_days,
                     anchored=args.anchored, pool=args.pool, common_period=args.common_period)

    from nexlify.hardware.profiler import HardwareProfiler

    profiler = HardwareProfiler(output_dir=str(output_dir), reprofile=args.reprofile)
    # The machine's plan sets how jobs run; what they learn is the validated configuration, so the
    # verdict does not move with the hardware. A --batch-size keeps that configuration's pace.
    config, overrides = resolve_config(args, profiler.config.with_overrides(WALKFORWARD_LEARNING), file_values)
    walkforward_defaults: dict[str, Any] = {k: v for k, v in WALKFORWARD_LEARNING.items() if k not in overrides}
    if "episodes" not in overrides:
        walkforward_defaults["episodes"] = DEFAULT_EPISODES
    if "eval_interval" not in overrides:
        episodes = walkforward_defaults.get("episodes", config.episodes)
        walkforward_defaults["eval_interval"] = max(1, episodes // VALIDATIONS_PER_RUN)
    config = config.with_overrides(walkforward_defaults)
    if args.ray is not None:
        at_once, devices, why = 0, None, f"on Ray ({args.ray}): each node plans its own jobs"
    else:
        cpu = (profiler.profile or {}).get("cpu") or {}
        gpus = len(((profiler.profile or {}).get("gpu") or {}).get("devices") or [])
        at_once, threads, devices, why = parallel_plan(config.device, config.num_workers,
                                                       int(cpu.get("usable_cores") or 1), gpus, available_memory_gb(),
                                                       args.jobs, len(jobs), _loop_rates(profiler.profile, config))
        config = config.with_overrides({"num_workers": threads})
    jobs = assign_config(jobs, config.to_dict(), devices)
    return _WalkforwardPlan(jobs, config, {**overrides, **walkforward_defaults}, profiler, at_once, why)


def _ray_executor(args: argparse.Namespace, plan: _WalkforwardPlan, console: Console) -> Any:
    """Runs the jobs on Ray; the nodes' plans are shown once Ray is joined."""
    from nexlify.distributed.executor import RayExecutor

    return RayExecutor(args.ray, explicit=plan.overrides, trials_per_gpu=args.trials_per_gpu,
                       max_at_once=args.jobs, on_plan=None if args.quiet else _show_ray_plan(console))


def _show_ray_plan(console: Console) -> Any:
    def show(kinds: list[Any]) -> None:
        for kind in kinds:
            console.print(f"Ray: {kind.slots} job(s) at once on {', '.join(kind.nodes)}: "
                          f"{kind.reservation.reason}", highlight=False, soft_wrap=True)

    return show


def _walkforward(args: argparse.Namespace, console: Console) -> int:
    from nexlify.evaluation.walkforward import local_executor, refuse_other_walkforwards, run_walkforward
    from nexlify.evaluation.walkforward_report import SUMMARY, write_outputs
    from nexlify.training.pipeline import write_hardware_profile
    from nexlify.training.run_folder import RunFolderLock, previous_run_outputs

    if args.ray is not None:
        from nexlify.distributed.cluster import import_ray

        import_ray()  # before any work: say how to install it
    if args.model_choice is None:  # each seed alone (--ensemble none) is judged by its best model
        from nexlify.evaluation.defaults import default_model_choice

        args.model_choice = default_model_choice(args.ensemble)
    if args.model_choice != "best" and args.ensemble == "none":
        raise ConfigError(f"--model-choice {args.model_choice} acts through the seeds' ensemble; drop "
                          "--ensemble none or use --model-choice best")
    output_dir = check_output_dir("--checkpoint-dir", args.checkpoint_dir)
    foreign = [p.name for p in previous_run_outputs(output_dir) if p.name != "hardware_profile.json"]
    if foreign:
        raise ConfigError(f"--checkpoint-dir {output_dir} holds a `nexlify train` run ({', '.join(foreign[:3])}); "
                          "choose another folder for the walk-forward")
    plan = _plan_walkforward(args, output_dir)
    config, jobs = plan.config, plan.jobs
    markets = list(dict.fromkeys(name for job in jobs for name, _ in job.members))
    executor = local_executor(plan.at_once) if args.ray is None else _ray_executor(args, plan, console)
    with RunFolderLock(output_dir):
        refuse_other_walkforwards(jobs)  # before the profile is written over the earlier run's
        write_hardware_profile(output_dir, plan.profiler.profile, config,
                               [*plan.profiler.explain(), plan.why, _validated_settings_line(plan.overrides)],
                               plan.overrides)
        console.print(f"[bold]Nexlify walk-forward[/bold]: {len(jobs)} jobs ({', '.join(markets)}; {args.seeds} "
                      f"seed(s)), {config.episodes} episodes each, {config.model_size} model on {config.device}; "
                      f"{plan.why} -> {output_dir}", soft_wrap=True)
        try:
            result = run_walkforward(jobs, executor, progress=None if args.quiet else _walkforward_progress(console),
                                     ensemble=None if args.ensemble == "none" else args.ensemble,
                                     model_choice=args.model_choice)
        except KeyboardInterrupt:
            print(f"interrupted: the finished jobs are kept in {output_dir}; run the same command to go on (the "
                  "unfinished ones start again)", file=sys.stderr)
            raise
        write_outputs(result, output_dir, _walkforward_run_info(args, config, plan.at_once, markets, result,
                                                                args.model_choice))
    print((output_dir / SUMMARY).read_text())
    console.print(f"outputs in {output_dir}", soft_wrap=True)
    return 0


def _validated_settings_line(overrides: dict[str, Any]) -> str:
    """The reason line for the learning settings every walk-forward job takes whatever the machine."""
    from nexlify.evaluation.defaults import WALKFORWARD_LEARNING

    pinned = {key: value for key, value in WALKFORWARD_LEARNING.items() if overrides.get(key) == value}
    return ("learning settings chosen on validation folds, the same on every machine: "
            + (", ".join(f"{key} {value}" for key, value in pinned.items()) or "none (all set by flags or --config)"))


def _walkforward_run_info(args: argparse.Namespace, config: Any, at_once: int, markets: list[str],
                          result: Any, model_choice: str = "best") -> dict[str, Any]:
    """What the report says about the run. How the seeds were judged is read from ``result``: an
    ensemble only where one was built (not for one seed, nor on Ray without a shared folder)."""
    ensemble = next((o["job"]["ensemble"] for o in result.outcomes if o["job"].get("ensemble")), "none")
    return {"markets": markets, "seeds": args.seeds, "episodes": config.episodes, "train_days": args.train_days,
            "pooled": bool(args.pool and len(markets) > 1), "ensemble": ensemble, "model_choice": model_choice,
            "validation_days": args.validation_days, "anchored": args.anchored,
            "common_period": bool(args.common_period or args.anchored),
            "test_days_label": f"{args.folds} equal folds" if args.folds else f"{args.test_days or 90:g} days",
            "fee": config.fee, "slippage": config.slippage, "jobs_at_once": at_once or "Ray"}


def _sweep(args: argparse.Namespace, console: Console) -> int:
    from nexlify.config import read_config_file
    from nexlify.distributed.cluster import import_ray
    from nexlify.distributed.space import read_space
    from nexlify.distributed.sweep import SUMMARY, TRIALS_DIR, SweepSpec, final_folder, run_sweep, summary_text
    from nexlify.evaluation.defaults import default_model_choice
    from nexlify.evaluation.walkforward_report import write_outputs
    from nexlify.io import write_text_atomic
    from nexlify.training.run_folder import RunFolderLock

    import_ray()
    space = read_space(args.space)
    output_dir = check_output_dir("--checkpoint-dir", args.checkpoint_dir).resolve()
    plan = _plan_walkforward(args, output_dir / TRIALS_DIR / "_template")
    base_values = read_config_file(args.config) if args.config else {}
    spec = SweepSpec(space, args.trials, plan.jobs, base_values, search_seed=plan.config.seed)
    console.print(f"[bold]Nexlify sweep[/bold]: {args.trials} trial(s) over {', '.join(space)}, each a walk-forward "
                  f"of {len(plan.jobs)} job(s) judged on validation windows; Ray {args.ray} -> {output_dir}",
                  soft_wrap=True)
    # The chosen config's test verdict judges what `nexlify walkforward` judges by default.
    choice = default_model_choice(args.ensemble)
    with RunFolderLock(output_dir):
        loud = not args.quiet
        result = run_sweep(spec, output_dir, address=args.ray, explicit=plan.overrides,
                           trials_per_gpu=args.trials_per_gpu, on_plan=_show_ray_plan(console) if loud else None,
                           log_trials=loud, final_progress=_walkforward_progress(console) if loud else None,
                           ensemble=None if args.ensemble == "none" else args.ensemble, model_choice=choice)
        markets = list(dict.fromkeys(name for job in plan.jobs for name, _ in job.members))
        write_outputs(result.final, final_folder(output_dir, result.best),
                      _walkforward_run_info(args, plan.config, 0, markets, result.final, choice))
        text = summary_text(result, spec, plan.config.validation_metric)
        write_text_atomic(output_dir / SUMMARY, text)
    print(text)
    console.print(f"outputs in {output_dir}", soft_wrap=True)
    return 0


def _walkforward_progress(console: Console) -> Any:
    """Prints a line per finished job (with the overall count and time left) and per finished fold."""

    def show(event: dict[str, Any]) -> None:
        if event["event"] == "fold":
            row = event["row"]
            bh = row["baselines"]["buy_and_hold"]
            console.print(f"  fold {event['fold']}/{event['folds']} of {event['market']} done ({row['regime']}): "
                          f"agent ({row['policy']}) Sharpe {row['agent_sharpe']:.2f} vs buy-and-hold "
                          f"{bh['sharpe']:.2f}",
                          highlight=False, soft_wrap=True)
            return
        from nexlify.evaluation.walkforward import market_outcomes

        job = event["outcome"]["job"]
        views = market_outcomes(event["outcome"])
        sharpes = ", ".join(f"{view['test']['agent']['sharpe']:.2f}" for view in views)
        note = "already done" if event["resumed"] else f"test Sharpe {sharpes}"
        console.print(f"[{event['done']}/{event['total']}] {job['market']} fold {job['fold']} seed "
                      f"{job['seed']}: {note}  ({event['elapsed_seconds']:.0f} s elapsed)",
                      highlight=False, soft_wrap=True)

    return show


def _profile(args: argparse.Namespace, console: Console) -> int:
    import json

    from nexlify.hardware.profiler import HardwareProfiler, print_profile

    profiler = HardwareProfiler(output_dir=args.output_dir, reprofile=args.reprofile)
    if args.json:
        print(json.dumps(profiler.to_dict(), indent=2, default=str))
    else:
        print_profile(profiler, Console())
    return 0


def _download(args: argparse.Namespace, console: Console) -> int:
    from nexlify.data.exchange import check_save_path, download_ohlcv, save_ohlcv

    if args.out:  # before the download: a long fetch must not end in a refusal
        check_save_path(args.out)
        check_output_dir("--out's folder", Path(args.out).expanduser().parent)
    frame = download_ohlcv(args.exchange, args.symbol, args.timeframe, days=args.days)
    if args.out:
        save_ohlcv(frame, args.out)
        where = args.out
    else:
        where = "the cache (see --out to write a file)"
    console.print(f"{len(frame):,} candles {frame.index[0]} .. {frame.index[-1]} -> {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
