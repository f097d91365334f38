"""The ``nexlify`` command: train | evaluate | profile | download.

User mistakes (bad flags, bad data, bad files) print one line starting with ``error:`` and exit with
code 2; no traceback. Ctrl-C during training saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from nexlify.errors import ConfigError, NexlifyError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from nexlify.config import MODEL_SIZES

    parser = _Parser(prog="nexlify", description="Adaptive deep-RL trading agent that plans itself for your hardware.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train on market data with a plan fitted to this machine")
    train.add_argument("--episodes", type=_positive_int, help="episodes to train (one pass of one account over "
                       "the training split each; default 1000)")
    train.add_argument("--data-days", type=_positive_int, help="use the most recent N days of data (default 180)")
    train.add_argument("--balance", type=_positive_float, help="initial balance in quote currency (default 10000)")
    train.add_argument("--model-size", choices=MODEL_SIZES, help="override the planned model size")
    train.add_argument("--batch-size", type=_positive_int, help="override the planned batch size")
    train.add_argument("--checkpoint-dir", default="models/adaptive_rl", help="where every output goes "
                       "(default models/adaptive_rl)")
    train.add_argument("--save-interval", type=_positive_int, help="episodes between checkpoint_ep{N}.pth "
                       "(default 50)")
    train.add_argument("--data", metavar="FILE", help="OHLCV CSV/Parquet file (default: bundled BTC/USDT 1h)")
    train.add_argument("--exchange", help="download candles from this ccxt exchange first (e.g. binance)")
    train.add_argument("--symbol", default=None, help="market symbol for --exchange (default BTC/USDT)")
    train.add_argument("--timeframe", default=None, help="candle timeframe for --exchange (default 1h)")
    train.add_argument("--seed", type=int, help="random seed (default 42)")
    train.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                       help="continue from a checkpoint (no PATH: the newest in --checkpoint-dir)")
    train.add_argument("--device", help="override the planned device: cpu, cuda, cuda:N or mps")
    train.add_argument("--parallel-envs", type=_positive_int, help="override the planned parallel environments")
    train.add_argument("--config", metavar="FILE", help="JSON file of config keys applied over the plan")
    train.add_argument("--tensorboard", action="store_true", help="log scalars to CHECKPOINT_DIR/tensorboard")
    train.add_argument("--reprofile", action="store_true", help="measure the hardware again, ignoring the cache")
    train.add_argument("--quiet", action="store_true", help="no progress display")

    evaluate = sub.add_parser("evaluate", help="backtest a saved model against the baselines")
    evaluate.add_argument("--model", required=True, metavar="PATH", help="a .pth file written by nexlify train")
    evaluate.add_argument("--data", metavar="FILE", help="data to backtest on (default: the held-out test "
                          "split of the model's training data)")
    evaluate.add_argument("--out", metavar="DIR", help="output folder (default: MODEL_DIR/evaluation)")
    evaluate.add_argument("--device", default="cpu", help="device to run the model on (default cpu)")

    profile = sub.add_parser("profile", help="show the detected hardware and the training plan with reasons")
    profile.add_argument("--json", action="store_true", help="print JSON instead of tables")
    profile.add_argument("--reprofile", action="store_true", help="measure again, ignoring the cache")
    profile.add_argument("--output-dir", default=".", help="folder whose disk is profiled (default .)")

    download = sub.add_parser("download", help="download OHLCV candles from an exchange (ccxt) to a file")
    download.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    download.add_argument("--symbol", default="BTC/USDT", help="market symbol (default BTC/USDT)")
    download.add_argument("--timeframe", default="1h", help="candle timeframe (default 1h)")
    download.add_argument("--days", type=_positive_int, default=180, help="days of history (default 180)")
    download.add_argument("--out", metavar="FILE", help="write to this CSV/Parquet file (default: print "
                          "where the cache file is)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    console = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        handler = {"train": _train, "evaluate": _evaluate, "profile": _profile, "download": _download}
        return handler[args.command](args, console)
    except NexlifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this torch build sees no CUDA GPU (torch.cuda.is_available() is "
                          "False); install a CUDA build of torch or use --device cpu")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: Apple MPS is not available here; use --device cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be cpu, cuda, cuda:N or mps; got {device!r}")


def _latest_checkpoint(folder: Path) -> Path:
    """The most recently written checkpoint_*.pth (periodic or interrupted) in ``folder``."""
    candidates = list(folder.glob("checkpoint_*.pth"))
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint_*.pth in {folder}; give the checkpoint path")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _train(args: argparse.Namespace, console: Console) -> int:
    from nexlify.config import read_config_file
    from nexlify.hardware.profiler import HardwareProfiler
    from nexlify.training.pipeline import run_training

    if args.data and args.exchange:
        raise ConfigError("--data and --exchange both name a data source; give one of them")
    if (args.symbol or args.timeframe) and not args.exchange:
        raise ConfigError("--symbol and --timeframe need --exchange (or use --data FILE)")
    output_dir = Path(args.checkpoint_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--checkpoint-dir {output_dir} exists and is not a folder")
    data: Any = None
    if args.data:
        if not Path(args.data).exists():
            raise ConfigError(f"--data file not found: {args.data}")
        data = args.data
    resume = None
    if args.resume:
        resume = _latest_checkpoint(output_dir) if args.resume == "latest" else Path(args.resume)
        if not resume.exists():
            raise ConfigError(f"--resume: checkpoint not found: {resume}")
    file_values = read_config_file(args.config) if args.config else None  # before the profile: fail fast
    profiler = HardwareProfiler(output_dir=str(output_dir), reprofile=args.reprofile)
    config, overrides = resolve_config(args, profiler.config, file_values)
    if args.exchange:
        from nexlify.data.exchange import download_ohlcv

        data = download_ohlcv(args.exchange, args.symbol or "BTC/USDT", args.timeframe or "1h",
                              days=config.data_days or 180)
    console.print(f"[bold]Nexlify[/bold]: {config.model_size} model on {config.device}, batch "
                  f"{config.batch_size} x {config.gradient_accumulation_steps}, {config.parallel_envs} parallel "
                  f"envs, {config.episodes} episodes -> {output_dir}", soft_wrap=True)
    results = run_training(config, data=data, output_dir=output_dir, profile=profiler.profile,
                           reasons=profiler.explain(), overrides=overrides, resume_from=resume,
                           tensorboard=args.tensorboard, console=console, quiet=args.quiet)
    summary = (output_dir / "training_summary.txt").read_text()
    print(summary)
    run = results["run"]
    console.print(f"done: {run['episodes_done']} episode(s) in {run['train_seconds']:.0f} s; outputs in {output_dir}",
                  soft_wrap=True)
    return 0


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from nexlify.evaluation.report import metrics_table
    from nexlify.training.pipeline import evaluate_model

    if not Path(args.model).exists():
        raise ConfigError(f"--model file not found: {args.model}")
    if args.data and not Path(args.data).exists():
        raise ConfigError(f"--data file not found: {args.data}")
    _check_device(args.device)
    results = evaluate_model(args.model, data=args.data, out_dir=args.out, device=args.device)
    print(f"Backtest on {results['data']} ({results['rows']} rows)\n" + metrics_table(results["test"]))
    return 0


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
    from nexlify.data.exchange import download_ohlcv, save_ohlcv

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
