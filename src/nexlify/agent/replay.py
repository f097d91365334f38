"""Replay memory: preallocated ring buffers, prioritized sampling and n-step returns.

Design notes (the original copied its whole buffer on every sample):

* Storage is allocated once with ``torch.empty`` on the training device. On Linux the pages of a
  large CPU allocation are only committed when first written, so resident memory grows with the
  number of stored transitions, not with ``capacity``; ``freeze_growth`` stops that growth.
* Sampling draws random indices and gathers only those rows (``batch x state_size`` values);
  the storage itself is never copied or cloned.
* Every transition carries a ``horizon`` (1 for ordinary transitions, k <= n for n-step ones) so the
  learner bootstraps with ``gamma ** horizon``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nexlify.config import replay_bytes_per_transition

ArrayLike = np.ndarray | torch.Tensor

_STATE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _state_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in _STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {sorted(_STATE_DTYPES)}, got {dtype!r}")
        return _STATE_DTYPES[dtype]
    if dtype not in _STATE_DTYPES.values():
        raise ValueError(f"state_dtype must be torch.float32 or torch.float16, got {dtype}")
    return dtype


@dataclass
class ReplaySample:
    """A gathered mini-batch. Tensors live on the buffer's device; ``indices`` stay on the CPU."""

    states: torch.Tensor  # float32 (batch, state_size)
    actions: torch.Tensor  # int64 (batch,)
    rewards: torch.Tensor  # float32 (batch,)  n-step discounted return when n > 1
    next_states: torch.Tensor  # float32 (batch, state_size)
    dones: torch.Tensor  # float32 (batch,)  1.0 = terminal: do not bootstrap
    horizons: torch.Tensor | None  # int64 (batch,)  steps between state and next_state; None: not asked
    indices: torch.Tensor  # int64 (batch,) CPU
    weights: torch.Tensor | None = None  # importance weights (prioritized replay only)


class ReplayBuffer:
    """Uniform experience replay over preallocated tensors on ``device``.

    Insertion is O(1) per transition (``add``) or per batch (``add_batch``, with wrap-around);
    ``sample`` draws indices with a private ``torch.Generator`` so runs are reproducible and the
    generator state can be checkpointed.
    """

    def __init__(
        self,
        capacity: int,
        state_size: int,
        device: str | torch.device = "cpu",
        state_dtype: torch.dtype | str = torch.float32,
        seed: int | None = None,
        output_device: str | torch.device | None = None,
    ) -> None:
        if capacity < 1 or state_size < 1:
            raise ValueError(f"capacity and state_size must be >= 1, got {capacity}, {state_size}")
        self.device = torch.device(device)
        # Where sampled batches are delivered: the storage device, or the GPU when the memory is
        # kept in host RAM to spare VRAM (optimization_level gpu_conserve).
        self.output_device = torch.device(output_device) if output_device is not None else self.device
        self.state_size = int(state_size)
        self.state_dtype = _state_dtype(state_dtype)
        self._allocate(int(capacity))
        # Indices drawn on the GPU that holds the memory: a CPU draw would be a host-to-device copy
        # from pageable memory, which waits for the GPU to finish everything queued, every step.
        on_gpu = self._draws_on_device and self.device.type == "cuda"
        self.generator = torch.Generator(device=self.device if on_gpu else "cpu")
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def _allocate(self, capacity: int) -> None:
        self.allocated = capacity  # rows of storage; capacity may later shrink below it
        self.capacity = capacity
        self.position = 0  # next row to write
        self.size = 0
        # torch.empty, not zeros: untouched pages cost no RAM until the buffer fills them.
        shape = (capacity, self.state_size)
        self.states = torch.empty(shape, dtype=self.state_dtype, device=self.device)
        self.next_states = torch.empty(shape, dtype=self.state_dtype, device=self.device)
        self.actions = torch.empty(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.empty(capacity, dtype=torch.float32, device=self.device)
        self.dones = torch.empty(capacity, dtype=torch.float32, device=self.device)
        self.horizons = torch.empty(capacity, dtype=torch.uint8, device=self.device)
        # On the CPU, numpy views let single-transition writes skip creating tensors per step.
        self._np = None
        if self.device.type == "cpu":
            self._np = {name: getattr(self, name).numpy() for name in self._FIELDS}

    _FIELDS = ("states", "next_states", "actions", "rewards", "dones", "horizons")
    _draws_on_device = True  # uniform sampling can run where the memory lives

    # --- sizes -----------------------------------------------------------------------------
    @staticmethod
    def bytes_per_transition(state_size: int, state_dtype: torch.dtype | str = torch.float32) -> int:
        """Storage bytes per transition: two states, int64 action, float32 reward/done, uint8 horizon."""
        name = str(_state_dtype(state_dtype)).removeprefix("torch.")
        return replay_bytes_per_transition(state_size, name)

    @property
    def nbytes(self) -> int:
        """Bytes of storage allocated (reserved) for all ``allocated`` rows."""
        return sum(getattr(self, name).nbytes for name in self._FIELDS)

    def __len__(self) -> int:
        return self.size

    def freeze_growth(self) -> None:
        """Stop growing: capacity becomes the current size, so new transitions overwrite the oldest.

        The trainer calls this when free host memory runs low; rows never written stay uncommitted.
        """
        if self.size == 0:
            return  # nothing to overwrite yet; keep the original capacity
        if self.size < self.capacity:
            self.capacity = self.size
            self.position = 0  # the oldest row of a buffer that never wrapped is row 0

    # --- insertion -------------------------------------------------------------------------
    def add(
        self,
        state: ArrayLike,
        action: int,
        reward: float,
        next_state: ArrayLike,
        done: bool,
        horizon: int = 1,
    ) -> None:
        """Store one transition (O(1)); overwrites the oldest once full."""
        if self._np is None:  # accelerator storage: one small batch copy per field
            self.add_batch(
                np.asarray(state)[None],
                np.asarray([action]),
                np.asarray([reward]),
                np.asarray(next_state)[None],
                np.asarray([done]),
                np.asarray([horizon]),
            )
            return
        i = self.position
        arrays = self._np
        arrays["states"][i] = state
        arrays["next_states"][i] = next_state
        arrays["actions"][i] = action
        arrays["rewards"][i] = reward
        arrays["dones"][i] = float(done)
        arrays["horizons"][i] = horizon
        self._on_write(i, 1)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_batch(
        self,
        states: ArrayLike,
        actions: ArrayLike,
        rewards: ArrayLike,
        next_states: ArrayLike,
        dones: ArrayLike,
        horizons: ArrayLike | None = None,
    ) -> None:
        """Store N transitions at once (numpy arrays or tensors), wrapping around the ring.

        The result is identical to N calls of ``add``: with N > capacity only the last
        ``capacity`` transitions survive.
        """
        raw = (states, next_states, actions, rewards, dones, 1 if horizons is None else horizons)
        if self._np is not None:
            # CPU storage: numpy slice assignment is several times cheaper than torch copy_ calls.
            fields = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in raw]
            targets = [self._np[name] for name in self._FIELDS]
        else:
            if horizons is None:  # made on the device: a host tensor would be a copy that waits
                raw = (*raw[:5], self.horizons.new_ones(len(states)))
            fields = [torch.as_tensor(x) for x in raw]
            targets = [getattr(self, name) for name in self._FIELDS]
        n = fields[0].shape[0]
        if n == 0:
            return
        if any(f.shape[0] != n for f in fields[:5]):
            raise ValueError("add_batch: all arguments must hold the same number of transitions")
        if fields[0].shape[1:] != (self.state_size,) or fields[1].shape[1:] != (self.state_size,):
            raise ValueError(f"add_batch: states must have shape (N, {self.state_size})")
        if fields[5].ndim == 0:
            fields[5] = (
                fields[5].reshape(1).repeat(n) if isinstance(fields[5], torch.Tensor) else fields[5].repeat(n)
            )
        skip = max(0, n - self.capacity)  # rows that would be overwritten within this very batch
        if skip:
            fields = [f[skip:] for f in fields]
            self.position = (self.position + skip) % self.capacity
            n -= skip
        start = self.position
        first = min(n, self.capacity - start)
        for lo, hi, src_lo in ((start, start + first, 0), (0, n - first, first)):
            if hi <= lo:
                continue
            for target, src in zip(targets, fields, strict=True):
                part = src[src_lo : src_lo + hi - lo]
                if isinstance(target, np.ndarray):
                    target[lo:hi] = part  # numpy casts dtype (bool dones -> 0/1, float64 -> float16)
                else:
                    target[lo:hi].copy_(part)  # torch casts dtype and moves to the device
            self._on_write(lo, hi - lo)
        self.position = (start + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _on_write(self, start: int, count: int) -> None:
        """Hook: rows ``start:start+count`` were just written (prioritized replay sets their priority)."""

    # --- sampling --------------------------------------------------------------------------
    def sample_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Uniform random row indices (with replacement) and no importance weights."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator, device=self.generator.device)
        return idx, None

    def gather(self, indices: torch.Tensor, weights: torch.Tensor | None = None,
               with_horizons: bool = True) -> ReplaySample:
        """Gather the rows ``indices`` (only those rows are copied, never the storage).

        ``with_horizons=False`` skips the n-step horizons (1-step learners never read them).
        """
        idx = indices.to(self.device, non_blocking=True)
        out = self.output_device

        def rows(field: torch.Tensor) -> torch.Tensor:
            # index_select: the plain row gather, without advanced indexing's general machinery.
            picked = torch.index_select(field, 0, idx)
            return picked if picked.device == out else picked.to(out, non_blocking=True)

        return ReplaySample(
            states=rows(self.states).float(),
            actions=rows(self.actions),
            rewards=rows(self.rewards),
            next_states=rows(self.next_states).float(),
            dones=rows(self.dones),
            horizons=rows(self.horizons).long() if with_horizons else None,
            indices=indices,
            weights=None if weights is None else weights.to(out, non_blocking=True),
        )

    def sample(self, batch_size: int) -> ReplaySample:
        """Draw ``batch_size`` transitions."""
        return self.gather(*self.sample_indices(batch_size))

    # --- exact resume ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints only (safe for ``torch.load(weights_only=True)``)."""
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "allocated": self.allocated,
            "position": self.position,
            "size": self.size,
            "state_size": self.state_size,
            "state_dtype": str(self.state_dtype).removeprefix("torch."),
            "generator": self.generator.get_state(),
            "generator_device": self.generator.device.type,
        }
        for name in self._FIELDS:
            # Clone the filled part: torch.save of a view would write the whole storage anyway.
            state[name] = getattr(self, name)[: self.size].detach().to("cpu", copy=True)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore contents, ring position, capacity and sampling generator from ``state_dict``."""
        if int(state["state_size"]) != self.state_size:
            raise ValueError(f"replay state_size {state['state_size']} != buffer's {self.state_size}")
        allocated = max(int(state["allocated"]), int(state["capacity"]), int(state["size"]))
        self.state_dtype = _state_dtype(str(state["state_dtype"]))
        if allocated != self.allocated or self.states.dtype != self.state_dtype:
            self._allocate(allocated)
        size = int(state["size"])
        for name in self._FIELDS:
            getattr(self, name)[:size].copy_(state[name])
        self.capacity = int(state["capacity"])
        self.position = int(state["position"])
        self.size = size
        self.set_generator_state(state["generator"], state.get("generator_device", "cpu"))

    def set_generator_state(self, saved: torch.Tensor, device_type: str) -> None:
        """Restore the sampling generator saved on a ``device_type`` generator.

        A state from another kind of device (a GPU run resumed on a CPU) does not fit this generator;
        it then continues from a seed derived from the saved state: deterministic, other draws.
        """
        if device_type == self.generator.device.type:
            self.generator.set_state(saved)
        else:
            raw = torch.as_tensor(saved).to(torch.uint8)
            self.generator.manual_seed(int.from_bytes(bytes(raw[:8].tolist()), "little"))


class SumTree:
    """Binary sum tree over ``capacity`` leaves in one numpy array (root at index 1).

    Batch updates and batch prefix-sum searches are vectorised level by level: O(batch x log N).
    """

    def __init__(self, capacity: int) -> None:
        self.leaf_count = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.leaf_count.bit_length() - 1
        self.tree = np.zeros(2 * self.leaf_count, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self, count: int) -> np.ndarray:
        return self.tree[self.leaf_count : self.leaf_count + count]

    def update(self, indices: np.ndarray, values: np.ndarray | float) -> None:
        """Set leaf ``indices`` to ``values`` and refresh their ancestors."""
        pos = np.asarray(indices, dtype=np.int64) + self.leaf_count
        self.tree[pos] = values
        for _ in range(self.depth):
            pos = pos // 2  # duplicates are harmless: each parent is recomputed from its children
            self.tree[pos] = self.tree[2 * pos] + self.tree[2 * pos + 1]

    def rebuild(self) -> None:
        """Recompute every internal node from the leaves."""
        lo = self.leaf_count
        while lo > 1:
            lo //= 2
            self.tree[lo : 2 * lo] = self.tree[2 * lo : 4 * lo : 2] + self.tree[2 * lo + 1 : 4 * lo : 2]

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative-sum interval contains each value of ``prefix``."""
        idx = np.ones(len(prefix), dtype=np.int64)
        u = np.asarray(prefix, dtype=np.float64).copy()
        for _ in range(self.depth):
            left = 2 * idx
            left_sum = self.tree[left]
            # Only go right when there is mass there (guards float round-off at the very top).
            right = (u >= left_sum) & (self.tree[left + 1] > 0)
            u = np.where(right, u - left_sum, u)
            idx = left + right
        return idx - self.leaf_count


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al., 2016).

    P(i) = p_i^alpha / sum_k p_k^alpha; importance weights w_i = (N P(i))^-beta normalised by the
    batch maximum. New transitions get the highest priority seen so far. Sampling is stratified:
    the total mass is split into ``batch_size`` equal segments, one draw per segment.
    """

    _draws_on_device = False  # the sum tree lives in host memory

    def __init__(
        self, capacity: int, state_size: int, *, alpha: float = 0.6, beta: float = 0.4, eps: float = 1e-6,
        **buffer_options: Any,
    ) -> None:
        """``buffer_options``: ``ReplayBuffer``'s (``device``, ``state_dtype``, ``seed``, ``output_device``)."""
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.eps = float(eps)
        self.max_priority = 1.0
        super().__init__(capacity, state_size, **buffer_options)

    def _allocate(self, capacity: int) -> None:
        super()._allocate(capacity)
        self.tree = SumTree(capacity)

    @staticmethod
    def bytes_per_transition(state_size: int, state_dtype: torch.dtype | str = torch.float32) -> int:
        """As ``ReplayBuffer`` plus the sum tree (about two float64 nodes per leaf)."""
        return ReplayBuffer.bytes_per_transition(state_size, state_dtype) + 16

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.tree.tree.nbytes

    def _on_write(self, start: int, count: int) -> None:
        self.tree.update(np.arange(start, start + count), self.max_priority**self.alpha)

    def freeze_growth(self) -> None:
        super().freeze_growth()  # rows beyond the new capacity keep zero priority: never sampled

    def sample_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stratified proportional draw; returns indices and importance weights."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        jitter = torch.rand(batch_size, generator=self.generator, dtype=torch.float64).numpy()
        prefix = (np.arange(batch_size) + jitter) * (total / batch_size)
        leaves = np.minimum(self.tree.find(prefix), self.size - 1)
        probs = self.tree.tree[leaves + self.tree.leaf_count] / total
        weights = (self.size * probs) ** (-self.beta)
        weights /= weights.max()
        return torch.from_numpy(leaves), torch.from_numpy(weights.astype(np.float32))

    def update_priorities(self, indices: ArrayLike, td_errors: ArrayLike) -> None:
        """Set priorities from absolute TD errors of the sampled ``indices``."""
        idx = torch.as_tensor(indices).cpu().numpy()
        p = np.abs(torch.as_tensor(td_errors).detach().float().cpu().numpy()) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(idx, p**self.alpha)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["priorities"] = torch.from_numpy(self.tree.leaves(self.size).copy())
        state["max_priority"] = self.max_priority
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.tree.tree[:] = 0.0
        self.tree.leaves(self.size)[:] = state["priorities"].numpy()
        self.tree.rebuild()
        self.max_priority = float(state["max_priority"])


class NStepAccumulator:
    """Turns 1-step transitions of ``num_envs`` parallel environments into n-step transitions.

    For each env it keeps the last ``n`` (state, action) pairs in a ring and a running discounted
    return per pending start. It emits:

    * once a window is full: (s_t, a_t, sum_k gamma^k r_{t+k}, s_{t+n}, done=0, horizon=n);
    * when an episode ends, every pending start, with the return up to the end and
      horizon k <= n. ``terminated`` sets done=1 (no bootstrap); ``truncated`` keeps done=0 so the
      learner bootstraps from the final observation, but the window still ends there — no return
      ever crosses an episode boundary.
    """

    def __init__(self, n: int, gamma: float, num_envs: int, state_size: int) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n, self.gamma, self.num_envs, self.state_size = (
            int(n),
            float(gamma),
            int(num_envs),
            int(state_size),
        )
        self.t = 0
        self.states = np.zeros((self.n, self.num_envs, self.state_size), dtype=np.float32)
        self.actions = np.zeros((self.n, self.num_envs), dtype=np.int64)
        self.returns = np.zeros((self.n, self.num_envs), dtype=np.float64)
        self.pending = np.zeros(self.num_envs, dtype=np.int64)  # valid starts per env (<= n)
        self._gamma_pow = self.gamma ** np.arange(self.n)

    def push(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_states: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray | None = None,
    ) -> tuple[np.ndarray, ...] | None:
        """Add one step of every env; return the ready n-step transitions
        ``(states, actions, returns, next_states, dones, horizons)`` or None."""
        n, slot = self.n, self.t % self.n
        terminated = np.asarray(terminated, dtype=bool).reshape(self.num_envs)
        truncated = (
            np.zeros(self.num_envs, dtype=bool)
            if truncated is None
            else np.asarray(truncated, dtype=bool).reshape(self.num_envs)
        )
        self.states[slot] = states
        self.actions[slot] = actions
        self.returns[slot] = 0.0
        self.pending = np.minimum(self.pending + 1, n)
        ages = (self.t - np.arange(n)) % n  # steps since each slot's start
        self.returns += self._gamma_pow[ages][:, None] * np.asarray(rewards, dtype=np.float64)[None, :]

        ended = terminated | truncated
        out: list[tuple[np.ndarray, ...]] = []
        full = np.flatnonzero((self.pending == n) & ~ended)
        if full.size:
            oldest = (self.t + 1) % n  # the slot of age n-1
            out.append(
                (
                    self.states[oldest, full],
                    self.actions[oldest, full],
                    self.returns[oldest, full],
                    next_states[full],
                    np.zeros(full.size, np.float32),
                    np.full(full.size, n),
                )
            )
        if ended.any():
            for age in range(n):
                envs = np.flatnonzero(ended & (self.pending > age))
                if envs.size:
                    s = (self.t - age) % n
                    out.append(
                        (
                            self.states[s, envs],
                            self.actions[s, envs],
                            self.returns[s, envs],
                            next_states[envs],
                            terminated[envs].astype(np.float32),
                            np.full(envs.size, age + 1),
                        )
                    )
            self.pending[ended] = 0
        self.t += 1
        if not out:
            return None
        return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "states": torch.from_numpy(self.states.copy()),
            "actions": torch.from_numpy(self.actions.copy()),
            "returns": torch.from_numpy(self.returns.copy()),
            "pending": torch.from_numpy(self.pending.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.states[:] = state["states"].numpy()
        self.actions[:] = state["actions"].numpy()
        self.returns[:] = state["returns"].numpy()
        self.pending[:] = state["pending"].numpy()
