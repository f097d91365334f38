"""Live training display (rich) and optional TensorBoard logging.

On a terminal a progress bar shows episodes, transitions/s, epsilon, loss, validation score and
memory; elsewhere (CI, pipes) one plain line is printed per round so logs stay readable.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainingMonitor:
    """Shows progress and forwards scalars to TensorBoard when enabled."""

    def __init__(self, total_episodes: int, console: Console | None = None, tensorboard_dir: str | None = None,
                 quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.total = total_episodes
        self._writer = _tensorboard_writer(tensorboard_dir, self.console) if tensorboard_dir else None
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> TrainingMonitor:
        if not self.quiet and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()

    def log(self, message: str) -> None:
        """An event line (adaptation, checkpoint, warning)."""
        if not self.quiet:
            self.console.print(message)

    def update(self, episodes_done: int, stats: dict[str, Any]) -> None:
        """Refresh the display after a round and log the scalars."""
        text = (
            f"{stats.get('transitions_per_sec', 0):,.0f} tr/s{_fmt_eta(stats.get('eta_seconds'))}  "
            f"eps {stats.get('epsilon', 0):.3f}  "
            f"loss {_fmt_loss(stats.get('recent_loss'))}  val {_fmt(stats.get('validation_score'))}  "
            f"mem {stats.get('rss_gb', 0):.2f} GB"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=episodes_done, stats=text)
        elif not self.quiet:
            self.console.print(f"episodes {episodes_done}/{self.total}  {text}", highlight=False, soft_wrap=True)
        if self._writer is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)) and value is not None:
                    self._writer.add_scalar(key, value, episodes_done)


def _fmt_eta(seconds: float | None) -> str:
    """Time remaining at the speed measured so far in this run."""
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"  {minutes}m{secs:02d}s left"


def _fmt_loss(value: float | None) -> str:
    # Losses on hourly log returns are tiny; fixed-point would print 0.0000.
    return "-" if value is None else f"{value:.2e}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _tensorboard_writer(log_dir: str, console: Console) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        console.print("[yellow]--tensorboard: the tensorboard package is not installed "
                      "(pip install tensorboard); continuing without it[/yellow]")
        return None
    return SummaryWriter(log_dir=log_dir)
