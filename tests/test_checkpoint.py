"""Checkpoints: safe loading, real compression, atomic writes, cross-size loads and exact resume."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.errors import CheckpointError
from nexlify.training import checkpoint as ckpt


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_agent(state_size: int = 8, action_size: int = 3, **overrides) -> AdaptiveDQNAgent:
    values = {
        "model_size": "tiny",
        "learning_starts": 0,
        "batch_size": 16,
        "buffer_size": 2000,
        "seed": 11,
        "num_workers": 1,
    }
    values.update(overrides)
    return AdaptiveDQNAgent(state_size, action_size, TrainingConfig().with_overrides(values))


def feed(agent: AdaptiveDQNAgent, n: int, seed: int, envs: int = 4) -> None:
    """n steps of ``envs`` parallel environments with market-like (smooth, low-entropy) features."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        s = np.round(rng.standard_normal((envs, agent.state_size)), 2).astype(np.float32)
        agent.remember_batch(
            s,
            rng.integers(agent.action_size, size=envs),
            np.round(rng.normal(0, 0.01, envs), 4),
            s + 0.01,
            rng.random(envs) < 0.05,
            rng.random(envs) < 0.02,
        )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_everything(tmp_path: Path) -> None:
    agent = make_agent()
    feed(agent, 50, seed=0)
    for _ in range(3):
        agent.learn()
    agent.decay_epsilon(123)
    path = tmp_path / "agent.pth"
    size = agent.save(path, extra_metadata={"episode": 7, "scaler": {"mean": [0.1, 0.2]}})
    assert path.stat().st_size == size

    loaded = AdaptiveDQNAgent.from_checkpoint(path)
    assert same_weights(loaded.q_network, agent.q_network)
    assert same_weights(loaded.target_network, agent.target_network)
    assert (loaded.steps, loaded.updates, loaded.epsilon) == (agent.steps, agent.updates, agent.epsilon)
    assert loaded.config.to_dict() == agent.config.to_dict()
    assert loaded.checkpoint_metadata == {"episode": 7, "scaler": {"mean": [0.1, 0.2]}}
    opt_a, opt_b = agent.optimizer.state_dict()["state"], loaded.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"]) for k in opt_a)
    assert len(loaded.replay) == 0  # replay not requested

    other = make_agent()
    assert other.load(path) == {"episode": 7, "scaler": {"mean": [0.1, 0.2]}}
    assert same_weights(other.q_network, agent.q_network)


def test_payload_is_tensors_and_plain_containers_only(tmp_path: Path) -> None:
    agent = make_agent(prioritized_replay=True, n_step=3)
    feed(agent, 20, seed=1)
    agent.learn()
    agent.save(tmp_path / "a.pth", include_replay=True)
    raw = torch.load(tmp_path / "a.pth", weights_only=True)  # the strict loader accepts it as is
    assert raw["format"] == ckpt.FORMAT_NAME and raw["format_version"] == ckpt.FORMAT_VERSION
    assert raw["model_size"] == "tiny" and raw["hidden_layers"] == [64, 32]
    assert raw["config"]["batch_size"] == 16 and raw["state_size"] == 8 and raw["action_size"] == 3

    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (torch.Tensor, int, float, str, bool))

    assert plain(raw)


def test_loading_a_bigger_model_rebuilds_the_network(tmp_path: Path) -> None:
    big = make_agent(model_size="xlarge", dueling=True)
    big.save(tmp_path / "xl.pth")
    small = make_agent(model_size="tiny")
    small.load(tmp_path / "xl.pth")
    assert small.config.model_size == "xlarge" and small.config.dueling
    assert small.get_performance_stats()["parameters"] == big.get_performance_stats()["parameters"]
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(small.q_network(x), big.q_network(x))


def test_file_from_another_device_loads_on_this_machine(tmp_path: Path) -> None:
    agent = make_agent(num_workers=2)
    payload = ckpt.agent_payload(agent)
    payload["config"]["device"] = "cuda"  # as written by a GPU machine
    payload["config"]["num_workers"] = 16
    # A GPU's replay draws on a CUDA generator (16 bytes of state), which a CPU generator cannot take.
    payload["rng"]["replay"] = torch.arange(16, dtype=torch.uint8)
    payload["rng"]["replay_device_type"] = "cuda"
    (tmp_path / "gpu.pth").write_bytes(ckpt.encode_payload(payload, compress=False))
    here = AdaptiveDQNAgent.from_checkpoint(tmp_path / "gpu.pth", device="cpu")
    assert here.device.type == "cpu" and same_weights(here.q_network, agent.q_network)
    if not torch.cuda.is_available():
        assert AdaptiveDQNAgent.from_checkpoint(tmp_path / "gpu.pth").device.type == "cpu"
    loader = make_agent(num_workers=1)
    loader.load(tmp_path / "gpu.pth")
    assert loader.config.device == "cpu" and loader.config.num_workers == 1  # this machine's hardware


def test_compression_really_reduces_size(tmp_path: Path) -> None:
    agent = make_agent(buffer_size=20_000)
    feed(agent, 2_500, seed=2)
    agent.learn()
    plain = agent.save(tmp_path / "plain.pth", include_replay=True)
    weights_plain = agent.save(tmp_path / "w_plain.pth")
    agent.config = agent.config.with_overrides({"checkpoint_compression": True})
    packed = agent.save(tmp_path / "packed.pth", include_replay=True)
    weights_packed = agent.save(tmp_path / "w_packed.pth")
    print(
        f"\ncompression ratio with replay: {plain / packed:.2f}x ({plain:,} -> {packed:,} bytes); "
        f"weights only: {weights_plain / weights_packed:.2f}x ({weights_plain:,} -> {weights_packed:,})"
    )
    assert packed < 0.7 * plain and weights_packed < weights_plain
    assert (tmp_path / "packed.pth").read_bytes().startswith(ckpt.ZSTD_MAGIC)
    loaded = AdaptiveDQNAgent.from_checkpoint(tmp_path / "packed.pth")
    assert len(loaded.replay) == len(agent.replay) and same_weights(loaded.q_network, agent.q_network)
    assert torch.equal(loaded.replay.states[:100], agent.replay.states[:100])


def test_gzip_fallback_without_zstandard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = make_agent(checkpoint_compression=True)
    monkeypatch.setattr(ckpt, "zstandard", None)
    agent.save(tmp_path / "g.pth")
    assert (tmp_path / "g.pth").read_bytes().startswith(ckpt.GZIP_MAGIC)
    assert same_weights(AdaptiveDQNAgent.from_checkpoint(tmp_path / "g.pth").q_network, agent.q_network)


def test_crash_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "best_model.pth"
    old = make_agent(seed=1)
    old.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        make_agent(seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.pth"]  # no temp file left behind
    assert same_weights(AdaptiveDQNAgent.from_checkpoint(path).q_network, old.q_network)


class Exploit:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.NEXLIFY_PWNED = True",))


@pytest.mark.parametrize("compressed", [False, True])
def test_malicious_pickle_is_refused_as_unsafe(tmp_path: Path, compressed: bool) -> None:
    buffer = io.BytesIO()
    torch.save({"format": ckpt.FORMAT_NAME, "format_version": 1, "payload": Exploit()}, buffer)
    data = buffer.getvalue()
    path = tmp_path / "evil.pth"
    path.write_bytes(ckpt.compress_bytes(data) if compressed else data)
    agent = make_agent()
    before = [p.clone() for p in agent.q_network.parameters()]
    with pytest.raises(CheckpointError, match="unsafe"):
        agent.load(path)
    import builtins

    assert not hasattr(builtins, "NEXLIFY_PWNED")
    assert all(torch.equal(a, b) for a, b in zip(before, agent.q_network.parameters(), strict=True))


def test_damaged_files_raise_clear_errors(tmp_path: Path) -> None:
    agent = make_agent()
    good = tmp_path / "good.pth"
    agent.save(good)
    data = good.read_bytes()
    cases = {
        "missing.pth": None,
        "empty.pth": b"",
        "truncated.pth": data[: len(data) // 2],
        "garbage.pth": b"\x00not a checkpoint\xff" * 50,
        "truncated_zstd.pth": ckpt.compress_bytes(data)[:300],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            AdaptiveDQNAgent.from_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        message = str(info.value)
        assert any(word in message for word in ("not found", "empty", "truncated", "corrupt")), message


def test_wrong_version_and_foreign_files_are_refused(tmp_path: Path) -> None:
    payload = ckpt.agent_payload(make_agent())
    payload["format_version"] = 99
    (tmp_path / "future.pth").write_bytes(ckpt.encode_payload(payload, compress=False))
    with pytest.raises(CheckpointError, match="format version 99"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "future.pth")
    torch.save({"model_state_dict": {}}, tmp_path / "legacy.pth")
    with pytest.raises(CheckpointError, match="not a Nexlify agent checkpoint"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "legacy.pth")


def test_incompatible_sizes_refused_when_checked_and_agent_left_intact(tmp_path: Path) -> None:
    make_agent(state_size=12).save(tmp_path / "s12.pth")
    agent = make_agent(state_size=8)
    before = [p.clone() for p in agent.q_network.parameters()]
    with pytest.raises(CheckpointError, match="state_size=12"):
        agent.load(tmp_path / "s12.pth", check_sizes=True)
    assert agent.state_size == 8
    assert all(torch.equal(a, b) for a, b in zip(before, agent.q_network.parameters(), strict=True))
    agent.load(tmp_path / "s12.pth")  # unchecked: the agent becomes the file's 12-feature agent
    assert agent.state_size == 12 and agent.q_network.state_size == 12


def test_non_json_extra_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="JSON"):
        make_agent().save(tmp_path / "x.pth", extra_metadata={"scaler": object()})
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("n_step,prioritized", [(1, False), (3, True)])
def test_resume_is_bit_identical_to_not_stopping(tmp_path: Path, n_step: int, prioritized: bool) -> None:
    def continue_training(agent: AdaptiveDQNAgent) -> list[float]:
        losses = []
        for k in range(6):
            feed(agent, 3, seed=100 + k)
            agent.act_batch(np.ones((4, 8), np.float32))
            agent.decay_epsilon(12)
            losses.append(agent.learn())
        return losses

    agent = make_agent(
        n_step=n_step, prioritized_replay=prioritized, target_update_interval=4, checkpoint_compression=True
    )
    feed(agent, 60, seed=5)
    for _ in range(7):
        agent.learn()
    agent.save(tmp_path / "resume.pth", include_replay=True)
    uninterrupted = continue_training(agent)
    resumed = AdaptiveDQNAgent.from_checkpoint(tmp_path / "resume.pth")
    assert continue_training(resumed) == uninterrupted
    assert same_weights(resumed.q_network, agent.q_network)
    assert same_weights(resumed.target_network, agent.target_network)
    assert (resumed.steps, resumed.updates, resumed.epsilon) == (agent.steps, agent.updates, agent.epsilon)
    size = len(agent.replay)
    assert len(resumed.replay) == size and resumed.replay.position == agent.replay.position
    assert torch.equal(resumed.replay.rewards[:size], agent.replay.rewards[:size])
    assert (
        resumed.act_batch(np.ones((64, 8), np.float32)).tolist()
        == agent.act_batch(np.ones((64, 8), np.float32)).tolist()
    )
