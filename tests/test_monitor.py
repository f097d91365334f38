"""The live monitor: plain lines off a terminal, TensorBoard scalars when asked for."""

import io
import sys
import types

from rich.console import Console

from nexlify.training.monitor import TrainingMonitor


class FakeWriter:
    instances: list["FakeWriter"] = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def close(self):
        self.closed = True


def test_tensorboard_scalars_are_written_when_installed(tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    console = Console(file=io.StringIO(), force_terminal=False)
    with TrainingMonitor(10, console=console, tensorboard_dir=str(tmp_path / "tb")) as monitor:
        monitor.update(5, {"transitions_per_sec": 1000.0, "epsilon": 0.5, "recent_loss": None, "device": "cpu"})
    writer = FakeWriter.instances[-1]
    assert writer.log_dir == str(tmp_path / "tb") and writer.closed
    assert ("transitions_per_sec", 1000.0, 5) in writer.scalars and ("epsilon", 0.5, 5) in writer.scalars
    assert all(key not in ("recent_loss", "device") for key, _, _ in writer.scalars)  # no None, no text


def test_missing_tensorboard_warns_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = io.StringIO()
    with TrainingMonitor(10, console=Console(file=out, width=200), tensorboard_dir=str(tmp_path)) as monitor:
        monitor.update(1, {"transitions_per_sec": 10.0})
    text = out.getvalue()
    assert "tensorboard package is not installed" in text
    assert "episodes 1/10" in text  # the plain progress line
