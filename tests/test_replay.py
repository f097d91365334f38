"""Replay memory: ring insertion, sampling without copies, fp16 storage, PER and n-step returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nexlify.agent.replay import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer, SumTree


def transitions(n: int, state_size: int = 3, start: int = 0):
    ids = np.arange(start, start + n)
    states = np.repeat(ids[:, None], state_size, axis=1).astype(np.float32)
    return states, ids % 4, ids.astype(np.float32), states + 0.5, (ids % 7 == 0)


def test_single_insertion_wraps_like_a_ring() -> None:
    buf = ReplayBuffer(5, 3, seed=0)
    for i in range(7):
        s, a, r, s2, d = transitions(1, start=i)
        buf.add(s[0], int(a[0]), float(r[0]), s2[0], bool(d[0]))
    assert len(buf) == 5 and buf.position == 2
    # Rows 0,1 were overwritten by transitions 5,6; rows 2..4 still hold 2..4.
    assert buf.rewards.tolist() == [5, 6, 2, 3, 4]
    assert buf.states[0].tolist() == [5, 5, 5] and buf.next_states[1].tolist() == [6.5] * 3
    assert buf.actions.dtype == torch.int64 and buf.dones.dtype == torch.float32


def test_add_batch_equals_repeated_add_including_wrap_and_oversized_batches() -> None:
    for sizes in ([3, 4, 2], [12], [6, 9, 1]):
        a, b = ReplayBuffer(5, 3, seed=0), ReplayBuffer(5, 3, seed=0)
        start = 0
        for n in sizes:
            s, act, r, s2, d = transitions(n, start=start)
            a.add_batch(s, act, r, s2, d)
            for i in range(n):
                b.add(s[i], int(act[i]), float(r[i]), s2[i], bool(d[i]))
            start += n
        assert (a.position, a.size) == (b.position, b.size)
        for name in ReplayBuffer._FIELDS:
            assert torch.equal(getattr(a, name), getattr(b, name)), (sizes, name)


def test_add_batch_accepts_tensors() -> None:
    buf = ReplayBuffer(10, 3)
    s, a, r, s2, d = transitions(4)
    buf.add_batch(
        torch.from_numpy(s),
        torch.from_numpy(a),
        torch.from_numpy(r),
        torch.from_numpy(s2),
        torch.from_numpy(d),
    )
    assert len(buf) == 4 and buf.rewards[:4].tolist() == [0, 1, 2, 3]


def test_sampling_is_uniform_and_reproducible() -> None:
    buf = ReplayBuffer(100, 3, seed=1)
    buf.add_batch(*transitions(50))
    sample = buf.sample(50_000)
    counts = np.bincount(sample.indices.numpy(), minlength=50)
    assert counts.shape == (50,) and counts.min() > 800 and counts.max() < 1200  # expected 1000 each
    # Rows returned are the stored ones (reward i <-> state i).
    assert torch.equal(sample.states[:, 0], sample.rewards)
    again = ReplayBuffer(100, 3, seed=1)
    again.add_batch(*transitions(50))
    assert torch.equal(again.sample(50_000).indices, sample.indices)


def test_sample_gathers_rows_without_copying_the_storage() -> None:
    buf = ReplayBuffer(20_000, 64, seed=0)
    buf.add_batch(*transitions(20_000, state_size=64))
    pointers = [getattr(buf, name).data_ptr() for name in ReplayBuffer._FIELDS]
    storage_bytes = buf.nbytes
    for _ in range(20):
        batch = buf.sample(32)
    assert [getattr(buf, name).data_ptr() for name in ReplayBuffer._FIELDS] == pointers
    # The batch is its own small tensor of exactly batch rows, not a view of (or copy of) the storage.
    assert batch.states.untyped_storage().nbytes() == 32 * 64 * 4
    assert batch.states.untyped_storage().data_ptr() != buf.states.untyped_storage().data_ptr()
    assert buf.nbytes == storage_bytes


def test_gather_returns_exactly_the_stored_rows_and_skips_horizons_on_request() -> None:
    buf = ReplayBuffer(16, 3, seed=0)
    buf.add_batch(*transitions(10), horizons=np.arange(10) % 3 + 1)
    idx = torch.tensor([7, 0, 7, 3])
    full, lean = buf.gather(idx), buf.gather(idx, with_horizons=False)
    assert full.rewards.tolist() == [7.0, 0.0, 7.0, 3.0] and full.actions.tolist() == [3, 0, 3, 3]
    assert full.states[:, 0].tolist() == [7.0, 0.0, 7.0, 3.0] and full.dones.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert full.horizons.tolist() == [2, 1, 2, 1] and full.horizons.dtype == torch.int64
    assert lean.horizons is None and torch.equal(lean.next_states, full.next_states)


def test_float16_states_halve_state_memory_and_sample_as_float32() -> None:
    f32 = ReplayBuffer(1000, 40, state_dtype=torch.float32)
    f16 = ReplayBuffer(1000, 40, state_dtype="float16")
    assert f16.states.nbytes * 2 == f32.states.nbytes
    assert f16.next_states.nbytes * 2 == f32.next_states.nbytes
    per32 = ReplayBuffer.bytes_per_transition(40, torch.float32)
    per16 = ReplayBuffer.bytes_per_transition(40, "float16")
    assert per32 - per16 == 2 * 40 * 2
    assert f32.nbytes == 1000 * per32 and f16.nbytes == 1000 * per16
    f16.add_batch(*transitions(10, state_size=40))
    assert f16.sample(4).states.dtype == torch.float32


def test_freeze_growth_overwrites_instead_of_growing() -> None:
    buf = ReplayBuffer(100, 3)
    buf.add_batch(*transitions(10))
    buf.freeze_growth()
    assert buf.capacity == 10
    buf.add_batch(*transitions(3, start=100))
    assert len(buf) == 10
    assert buf.rewards[:10].tolist() == [100, 101, 102, 3, 4, 5, 6, 7, 8, 9]  # oldest replaced first


def test_state_dict_round_trip_resumes_sampling_exactly() -> None:
    buf = ReplayBuffer(8, 3, seed=3)
    buf.add_batch(*transitions(11))
    buf.sample(5)
    state = buf.state_dict()
    assert all(isinstance(v, (torch.Tensor, int, str)) for v in state.values())
    other = ReplayBuffer(8, 3, seed=99)
    other.load_state_dict(state)
    assert (other.position, other.size, other.capacity) == (buf.position, buf.size, buf.capacity)
    assert torch.equal(other.sample(16).indices, buf.sample(16).indices)
    buf.add_batch(*transitions(2, start=50))
    other.add_batch(*transitions(2, start=50))
    assert torch.equal(other.rewards, buf.rewards)


def test_state_from_a_gpu_generator_resumes_on_the_cpu_deterministically() -> None:
    buf = ReplayBuffer(8, 3, seed=3)
    buf.add_batch(*transitions(11))
    state = buf.state_dict()
    # A CUDA generator's state (Philox seed + offset, 16 bytes) does not fit a CPU generator.
    state["generator"] = torch.arange(16, dtype=torch.uint8)
    state["generator_device"] = "cuda"
    first, second = ReplayBuffer(8, 3, seed=1), ReplayBuffer(8, 3, seed=2)
    first.load_state_dict(state)
    second.load_state_dict(state)
    assert torch.equal(first.sample(16).indices, second.sample(16).indices)
    assert torch.equal(first.rewards, buf.rewards)


def test_sum_tree_totals_and_search() -> None:
    tree = SumTree(5)
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 0.0, 4.0]))
    assert tree.total == 10.0
    found = tree.find(np.array([0.0, 0.99, 1.0, 2.9, 3.0, 5.99, 6.0, 9.99]))
    assert found.tolist() == [0, 0, 1, 1, 2, 2, 4, 4]


def test_prioritized_sampling_follows_priorities_and_weights() -> None:
    buf = PrioritizedReplayBuffer(16, 3, seed=0, alpha=1.0, beta=1.0)
    buf.add_batch(*transitions(4))
    buf.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 7.0]) - buf.eps)
    idx, weights = buf.sample_indices(40_000)
    freq = np.bincount(idx.numpy(), minlength=4) / 40_000
    np.testing.assert_allclose(freq, [0.1, 0.1, 0.1, 0.7], atol=0.01)
    # w ~ 1/P normalised by the max: low-priority rows weigh 1, the frequent one 1/7.
    w = {int(i): float(x) for i, x in zip(idx, weights, strict=True)}
    assert w[0] == pytest.approx(1.0) and w[3] == pytest.approx(1 / 7, rel=1e-5)
    # New transitions enter with the maximum priority seen.
    buf.add_batch(*transitions(1, start=4))
    assert buf.tree.leaves(5)[4] == pytest.approx(7.0)


def test_prioritized_state_dict_round_trip() -> None:
    buf = PrioritizedReplayBuffer(8, 3, seed=0)
    buf.add_batch(*transitions(6))
    buf.update_priorities(np.array([1, 2]), np.array([3.0, 0.1]))
    other = PrioritizedReplayBuffer(8, 3, seed=5)
    other.load_state_dict(buf.state_dict())
    assert other.tree.total == pytest.approx(buf.tree.total)
    a, wa = buf.sample_indices(32)
    b, wb = other.sample_indices(32)
    assert torch.equal(a, b) and torch.equal(wa, wb)


def test_nstep_returns_window_and_episode_ends() -> None:
    gamma = 0.5
    acc = NStepAccumulator(3, gamma, num_envs=2, state_size=1)
    emitted = []
    # env 0 terminates at step 4; env 1 is truncated at step 2.
    rewards = [[1, 10], [2, 20], [4, 40], [8, 80]]
    term = [[0, 0], [0, 0], [0, 0], [1, 0]]
    trunc = [[0, 0], [0, 1], [0, 0], [0, 0]]
    for t in range(4):
        states = np.array([[t], [100 + t]], dtype=np.float32)
        out = acc.push(
            states,
            np.array([t, t]),
            np.array(rewards[t], dtype=float),
            states + 1,
            np.array(term[t]),
            np.array(trunc[t]),
        )
        if out is not None:
            emitted += [
                tuple(float(x[i]) if np.ndim(x[i]) == 0 else float(x[i][0]) for x in out)
                for i in range(len(out[0]))
            ]
    got = {(s, nxt): (ret, done, h) for s, a, ret, nxt, done, h in emitted}
    # env 1: truncated at t=1 -> both pending starts flushed, bootstrapping (done=0) from s'=102.
    assert got[(100, 102)] == (10 + 0.5 * 20, 0.0, 2)
    assert got[(101, 102)] == (20, 0.0, 1)
    # env 1 restarts at t=2: window not full when the loop ends, nothing emitted yet.
    assert not any(s >= 102 for s, _ in got)
    # env 0: the full window starting at t=0 ends at s'=3, no episode end: done=0, horizon 3.
    assert got[(0, 3)] == (1 + 0.5 * 2 + 0.25 * 4, 0.0, 3)
    # env 0 terminates at t=3: remaining starts 1,2,3 flushed with done=1 and shorter horizons.
    assert got[(1, 4)] == (2 + 0.5 * 4 + 0.25 * 8, 1.0, 3)
    assert got[(2, 4)] == (4 + 0.5 * 8, 1.0, 2)
    assert got[(3, 4)] == (8, 1.0, 1)
    assert len(emitted) == 6


def test_nstep_with_n1_is_the_identity() -> None:
    acc = NStepAccumulator(1, 0.9, num_envs=3, state_size=2)
    s = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = acc.push(s, np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0]), s + 1, np.array([0, 1, 0]))
    assert out is not None
    order = np.argsort(out[1])  # emitted grouped by kind (window full / episode end), not env order
    states, actions, returns, next_states, dones, horizons = (x[order] for x in out)
    np.testing.assert_array_equal(states, s)
    np.testing.assert_array_equal(next_states, s + 1)
    np.testing.assert_array_equal(returns, [1, 2, 3])
    np.testing.assert_array_equal(dones, [0, 1, 0])
    assert horizons.tolist() == [1, 1, 1]
