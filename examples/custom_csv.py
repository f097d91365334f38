#!/usr/bin/env python3
"""Train on your own OHLCV CSV: validate it, step a TradingEnvironment on it, then a short training run.

    python examples/custom_csv.py --csv my_candles.csv     # your file (CSV, CSV.gz or Parquet)
    python examples/custom_csv.py                          # writes a demo CSV first, then uses it
    python examples/custom_csv.py --quick                  # a few seconds, tiny settings

Accepted layouts: a header naming timestamp/open/high/low/close/volume in any case (aliases such as
Date, open_time, o/h/l/c, vol work too), Binance kline exports, or headerless ccxt rows. Timestamps
may be epoch s/ms/us/ns or ISO 8601. Bad rows are refused with the line number and a fix; nothing is
invented. Everything is written under ``--out`` (default ``models/examples/custom_csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nexlify.config import TrainingConfig
from nexlify.data.market import detect_timeframe, load_ohlcv
from nexlify.errors import DataError
from nexlify.evaluation.report import metrics_table
from nexlify.strategies.nexlify_adaptive_rl_agent import HardwareProfiler
from nexlify.strategies.nexlify_rl_agent import TradingEnvironment
from nexlify.training.pipeline import run_training

QUICK = {"model_size": "tiny", "batch_size": 32, "buffer_size": 5_000, "learning_starts": 64, "train_frequency": 8,
         "target_update_interval": 20, "parallel_envs": 2, "episodes": 2, "eval_interval": 2, "save_interval": 2,
         "data_days": 14, "num_workers": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", help="your OHLCV file (default: write a demo CSV under --out and use it)")
    parser.add_argument("--demo-days", type=int, default=365, help="days of candles in the demo CSV (default 365)")
    parser.add_argument("--episodes", type=int, default=50, help="training episodes (default 50)")
    parser.add_argument("--data-days", type=int, default=180, help="most recent days of the file to use (default 180)")
    parser.add_argument("--out", default="models/examples/custom_csv", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny settings that finish in seconds")
    return parser.parse_args()


def write_demo_csv(path: Path, days: int) -> Path:
    """A CSV in a typical exchange-export layout (capitalised header, ISO dates), from the bundled candles."""
    candles = load_ohlcv(None, log_gaps=False).iloc[-days * 24:]
    export = candles.rename(columns=str.capitalize)
    export.index = export.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    export.index.name = "Date"
    export.to_csv(path)
    return path


def show_a_validation_error(good: Path, out: Path) -> None:
    """Break one row on purpose: the loader names the line and says how to fix it."""
    lines = good.read_text().splitlines()
    fields = lines[10].split(",")  # Date,Open,High,Low,Close,Volume
    fields[2] = str(float(fields[3]) / 2)  # high below low
    lines[10] = ",".join(fields)
    broken = out / "broken.csv"
    broken.write_text("\n".join(lines) + "\n")
    try:
        load_ohlcv(broken)
    except DataError as error:
        print(f"  refused: {error}")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    days = 20 if args.quick else args.demo_days
    path = Path(args.csv) if args.csv else write_demo_csv(out / "my_candles.csv", days)

    print(f"[1/4] validate {path}")
    frame = load_ohlcv(path)  # raises DataError with line and fix on any bad row
    gaps = frame.attrs["gaps"]
    print(f"  {len(frame):,} candles {frame.index[0]} .. {frame.index[-1]}, timeframe {detect_timeframe(frame)}, "
          f"{len(gaps)} gap(s) kept as they are")
    show_a_validation_error(path, out)

    print("[2/4] TradingEnvironment on the file")
    # From a file the feature scaler is fitted on that file; training (below) fits it on the train split only.
    env = TradingEnvironment(path, initial_balance=10_000.0, fee=0.001, slippage=0.0005)
    obs, info = env.reset(seed=0)
    for step in range(48):  # buy, hold two days' worth of hours, sell
        action = 1 if step == 0 else 2 if step == 47 else 0
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    print(f"  observation of {obs.shape[0]} numbers; after one round trip: equity {info['equity']:,.2f}, "
          f"fees {info['fees_paid']:.2f}, trades {info['trades']}")

    print("[3/4] training on the file")
    if args.quick:
        config = TrainingConfig().with_overrides(QUICK)
    else:
        config = HardwareProfiler().config.with_overrides({"episodes": args.episodes, "data_days": args.data_days})
    results = run_training(config, data=str(path), output_dir=out / "run", quiet=args.quick)
    run = results["run"]
    print(f"  data {run['data_source']}: train/validation/test rows {run['rows']['train']}/"
          f"{run['rows']['validation']}/{run['rows']['test']}; {run['episodes_done']} episodes")

    print("[4/4] held-out test split")
    print(metrics_table(results["test"]))
    print(f"done: outputs in {out / 'run'}")


if __name__ == "__main__":
    main()
