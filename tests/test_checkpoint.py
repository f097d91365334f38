"""Checkpoints: safe loading, real compression, atomic writes, cross-size loads and exact resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nexlify import serialization as ckpt
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.errors import CheckpointError


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
    header, payload = split_file(tmp_path / "a.pth")
    assert header["format"] == ckpt.FORMAT_NAME and header["format_version"] == ckpt.FORMAT_VERSION
    meta = header["meta"]
    assert meta["model_size"] == "tiny" and meta["config"]["batch_size"] == 16
    assert (meta["state_size"], meta["action_size"]) == (8, 3)
    raw = torch.load(io.BytesIO(payload), weights_only=True)  # the strict loader accepts it as is

    def plain(x) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (torch.Tensor, int, float, str, bool))

    assert plain(raw) and raw["replay"]["size"] == len(agent.replay)


def split_file(path: Path) -> tuple[dict, bytes]:
    """(header, payload) of a checkpoint file, read by hand from its documented layout."""
    data = path.read_bytes()
    assert data.startswith(ckpt.MAGIC)
    start = len(ckpt.MAGIC) + 8
    length = int.from_bytes(data[len(ckpt.MAGIC):start], "little")
    return json.loads(data[start:start + length]), data[start + length + 32:]


def craft(path: Path, header: dict | bytes, payload: bytes) -> Path:
    """A file with a *valid* digest over whatever header and payload it is given (a crafted file)."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    digest = hashlib.sha256(head + payload).digest()
    path.write_bytes(ckpt.MAGIC + len(head).to_bytes(8, "little") + head + digest + payload)
    return path


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
    agent.save(tmp_path / "here.pth")
    header, _ = split_file(tmp_path / "here.pth")
    state = agent.state_dict()
    header["meta"]["config"].update(device="cuda", num_workers=16)  # as written by a GPU machine
    # A GPU's replay draws on a CUDA generator (16 bytes of state), which a CPU generator cannot take.
    state["rng"]["replay"] = torch.arange(16, dtype=torch.uint8)
    state["rng"]["replay_device_type"] = "cuda"
    (tmp_path / "gpu.pth").write_bytes(ckpt.encode_checkpoint(header["meta"], state))
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
    assert split_file(tmp_path / "packed.pth")[0]["compression"] == "zstd"
    loaded = AdaptiveDQNAgent.from_checkpoint(tmp_path / "packed.pth")
    assert len(loaded.replay) == len(agent.replay) and same_weights(loaded.q_network, agent.q_network)
    assert torch.equal(loaded.replay.states[:100], agent.replay.states[:100])


def test_gzip_fallback_without_zstandard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = make_agent(checkpoint_compression=True)
    monkeypatch.setattr(ckpt, "zstandard", None)
    agent.save(tmp_path / "g.pth")
    assert split_file(tmp_path / "g.pth")[0]["compression"] == "gzip"
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
    path = tmp_path / "evil.pth"
    # A valid digest: the hash protects against damage, the safe unpickler against hostile content.
    path.write_bytes(ckpt.encode_checkpoint({"state_size": 8}, {"payload": Exploit()}, compress=compressed))
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
        "folder.pth": "dir",
    }
    (tmp_path / "folder.pth").mkdir()
    for name, content in cases.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            AdaptiveDQNAgent.from_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        message = str(info.value)
        words = ("not found", "empty", "truncated", "damaged", "not a Nexlify", "folder")
        assert any(word in message for word in words), message


def test_wrong_version_and_foreign_files_are_refused(tmp_path: Path) -> None:
    make_agent().save(tmp_path / "good.pth")
    header, payload = split_file(tmp_path / "good.pth")
    craft(tmp_path / "future.pth", {**header, "format_version": 99}, payload)
    with pytest.raises(CheckpointError, match="format version 99"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "future.pth")
    torch.save({"model_state_dict": {}}, tmp_path / "legacy.pth")  # a torch zip: the original's checkpoints
    with pytest.raises(CheckpointError, match="earlier Nexlify"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "legacy.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a Nexlify checkpoint"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "notes.pth")


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
            agent.act(np.ones((4, 8), np.float32))
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
        resumed.act(np.ones((64, 8), np.float32)).tolist()
        == agent.act(np.ones((64, 8), np.float32)).tolist()
    )


# --- integrity: damaged and crafted files ---------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_flipped_bytes_anywhere_are_refused_as_damaged(tmp_path: Path, compressed: bool) -> None:
    agent = make_agent(checkpoint_compression=compressed)
    feed(agent, 30, seed=3)
    agent.save(tmp_path / "good.pth", include_replay=True)
    data = bytearray((tmp_path / "good.pth").read_bytes())
    for where in (len(data) // 2, len(data) - 10, 40):  # payload middle, payload end, inside the header
        damaged = bytearray(data)
        damaged[where:where + 64] = bytes(b ^ 0x5A for b in damaged[where:where + 64])
        (tmp_path / "bad.pth").write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match="damaged|corrupt|truncated"):
            AdaptiveDQNAgent.from_checkpoint(tmp_path / "bad.pth")
        loader = make_agent(seed=99)
        before = [p.clone() for p in loader.q_network.parameters()]
        with pytest.raises(CheckpointError):
            loader.load(tmp_path / "bad.pth")
        assert all(torch.equal(a, b) for a, b in zip(before, loader.q_network.parameters(), strict=True))


def _crafted_cases(header: dict) -> dict[str, dict | bytes]:
    meta = header["meta"]
    return {
        "meta_not_json": b"{this is not json",
        "meta_a_list": {**header, "meta": [1, 2, 3]},
        "header_a_list": json.dumps([header]).encode(),
        "state_size_-1": {**header, "meta": {**meta, "state_size": -1}},
        "state_size_abc": {**header, "meta": {**meta, "state_size": "abc"}},
        "state_size_1e6": {**header, "meta": {**meta, "state_size": 10**6}},
        "state_size_mismatch": {**header, "meta": {**meta, "state_size": 9}},
        "buffer_size_huge": {**header, "meta": {**meta, "config": {**meta["config"], "buffer_size": 10**10}}},
        "buffer_size_string": {**header, "meta": {**meta, "config": {**meta["config"], "buffer_size": "lots"}}},
        "config_a_list": {**header, "meta": {**meta, "config": [1]}},
        "metadata_a_list": {**header, "meta": {**meta, "metadata": [1]}},
        "raw_bytes_negative": {**header, "raw_bytes": -1},
        "payload_bytes_wrong": {**header, "payload_bytes": 5},
        "unknown_compression": {**header, "compression": "lz4"},
    }


@pytest.mark.parametrize("case", list(_crafted_cases({"meta": {"config": {}}})))
def test_crafted_headers_with_a_valid_digest_raise_checkpoint_error(tmp_path: Path, case: str) -> None:
    make_agent().save(tmp_path / "good.pth", include_replay=True)
    header, payload = split_file(tmp_path / "good.pth")
    path = craft(tmp_path / f"{case}.pth", _crafted_cases(header)[case], payload)
    with pytest.raises(CheckpointError) as info:
        AdaptiveDQNAgent.from_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_crafted_replay_larger_than_its_buffer_is_refused(tmp_path: Path) -> None:
    agent = make_agent()
    feed(agent, 10, seed=1)
    state = agent.state_dict(include_replay=True)
    agent.save(tmp_path / "x.pth")
    meta = split_file(tmp_path / "x.pth")[0]["meta"]
    state["replay"]["allocated"] = 10**12  # would reserve terabytes
    (tmp_path / "huge.pth").write_bytes(ckpt.encode_checkpoint(meta, state))
    with pytest.raises(CheckpointError, match="buffer_size"):
        AdaptiveDQNAgent.from_checkpoint(tmp_path / "huge.pth")


def _zstd_bomb(raw_gb: float) -> bytes:
    """zstd frame of ``raw_gb`` GB of zeros, made without holding them in memory (~100 KB per 4 GB)."""
    import zstandard

    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as writer:
        zeros = bytes(1 << 20)
        for _ in range(int(raw_gb * 1024)):
            writer.write(zeros)
    return out.getvalue()


def test_a_zstd_bomb_is_refused_before_it_takes_memory(tmp_path: Path) -> None:
    make_agent(checkpoint_compression=True).save(tmp_path / "good.pth")
    header, _ = split_file(tmp_path / "good.pth")
    bomb = _zstd_bomb(1.0)
    honest = craft(tmp_path / "honest.pth", {**header, "payload_bytes": len(bomb), "raw_bytes": 1 << 30}, bomb)
    with pytest.raises(CheckpointError, match="far more than real checkpoints expand"):
        AdaptiveDQNAgent.from_checkpoint(honest)
    lying = craft(tmp_path / "lying.pth", {**header, "payload_bytes": len(bomb), "raw_bytes": 1000}, bomb)
    reads = []
    real_read_at_most = ckpt._read_at_most

    def spy(reader, limit):
        data = real_read_at_most(reader, limit)
        reads.append(len(data))
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ckpt, "_read_at_most", spy)
        with pytest.raises(CheckpointError, match="decompresses to a size other than recorded"):
            AdaptiveDQNAgent.from_checkpoint(lying)
    assert reads == [1001]  # decompression stopped one byte past the declared size, not at 1 GB
