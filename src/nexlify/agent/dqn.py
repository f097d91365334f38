"""AdaptiveDQNAgent: Double DQN with a Huber loss, sized and tuned by a ``TrainingConfig``.

Read top to bottom: construction, acting, remembering, learning, target updates, exploration
schedule, monitoring, runtime adaptation, checkpoints. Every hyperparameter comes from the config.

Fixes over the original agent: no dropout (so acting is never noisy), the target network is updated
by ``learn`` itself, replay sampling gathers rows instead of copying the buffer, and checkpoints are
safe, compressed for real and rebuild the network size they were trained with.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from nexlify.agent.networks import HostQFunction, QNetwork, build_q_network, count_parameters
from nexlify.agent.replay import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer, ReplaySample
from nexlify.config import STANDALONE_EPSILON_DECAY_STEPS, TrainingConfig
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES
from nexlify.devices import require_device, usable_device_or_cpu
from nexlify.errors import CheckpointError, ConfigError
from nexlify.serialization import read_checkpoint, write_checkpoint

_STATS_WINDOW = 100  # learn() calls averaged by get_performance_stats


def single_thread_blas() -> None:
    """Run numpy's BLAS (OpenBLAS, MKL) on one thread, process-wide.

    numpy's only matmuls in a run are the host acting forwards (a few dozen rows; see
    ``HostQFunction``), far too small to gain from threads. A multi-threaded BLAS pool spins while it
    waits, so beside torch's own threads, or any other busy process, each tiny matmul pays for the
    spinning: on a loaded 2-core VM the real training loop ran 4x slower with numpy's default pool.
    """
    threadpool_limits(limits=1, user_api="blas")


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for a config device name; ConfigError if that device is not available here."""
    return torch.device(require_device(name))


def _make_adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (AdamW when ``weight_decay`` > 0) with the fused kernel where this torch build supports
    it, else the foreach one."""
    optimizer: Any = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    kwargs: dict[str, Any] = {"weight_decay": weight_decay} if weight_decay > 0 else {}
    try:
        return optimizer(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return optimizer(params, lr=lr, foreach=True, **kwargs)


def replay_device(config: TrainingConfig, device: torch.device) -> torch.device:
    """Where the replay memory lives: on the training device, except that ``gpu_conserve`` keeps it
    in host RAM (VRAM then holds only the networks and one batch at a time)."""
    if config.optimization_level == "gpu_conserve" and device.type != "cpu":
        return torch.device("cpu")
    return device


def _reserve_replay(replay_cls: type[ReplayBuffer], capacity: int, state_size: int, **kwargs: Any) -> ReplayBuffer:
    """The replay memory, or ConfigError naming ``buffer_size`` when this machine cannot hold it."""
    device = torch.device(kwargs["device"])
    needed = capacity * ReplayBuffer.bytes_per_transition(state_size, kwargs["state_dtype"])
    total = psutil.virtual_memory().total if device.type == "cpu" else None
    message = (f"config key buffer_size {capacity:,} needs {needed / 2**30:,.1f} GB of replay memory, more than "
               f"{device.type} can hold here; lower buffer_size")
    if total is not None and needed > total:
        raise ConfigError(message)
    try:
        return replay_cls(capacity, state_size, **kwargs)
    except RuntimeError as exc:  # the allocator refused (CPU overcommit limit, GPU out of memory)
        if "memory" not in str(exc).lower() and "allocate" not in str(exc).lower():
            raise
        raise ConfigError(message) from None


class AdaptiveDQNAgent:
    """Double-DQN agent whose network, batch, replay and precision follow ``config``.

    The constructor applies three process-wide settings: ``torch.set_num_threads(config.num_workers)``
    (the cores the network math, or the host side of a GPU run, may use), one thread for numpy's
    BLAS (``single_thread_blas``) and, for
    ``optimization_level='max_performance'``, TF32 matmuls. ``gpu_conserve`` keeps the replay
    memory in host RAM and moves each sampled batch to the GPU.
    """

    def __init__(self, state_size: int, action_size: int, config: TrainingConfig | None = None) -> None:
        self._build(int(state_size), int(action_size), config or TrainingConfig())

    def _build(self, state_size: int, action_size: int, config: TrainingConfig) -> None:
        """(Re)create networks, optimizer, replay memory and counters. Used by ``__init__`` and ``load``."""
        self.state_size, self.action_size, self.config = state_size, action_size, config
        self.device = resolve_device(config.device)
        # Host threads for the network math on the CPU, and for the host side of GPU runs.
        torch.set_num_threads(config.num_workers)
        single_thread_blas()
        if config.optimization_level == "max_performance":
            # TF32 tensor-core matmuls on Ampere+ GPUs: fp32 range, ~10-bit mantissa; plenty for DQN.
            torch.set_float32_matmul_precision("high")

        # Seed initialisation without touching the caller's global torch RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.q_network: QNetwork = build_q_network(config, state_size, action_size).to(self.device)
        self.target_network: QNetwork = copy.deepcopy(self.q_network)
        self.target_network.requires_grad_(False)
        # Dropout is applied only where a generator is passed (the learning forward pass); eval mode
        # documents that acting and targets are deterministic functions of the weights.
        self.q_network.eval()
        self.target_network.eval()
        self._online_params = list(self.q_network.parameters())
        self._target_params = list(self.target_network.parameters())
        # The Polyak average of the online weights (config policy_averaging): the network that acts out
        # of sample. None without averaging: the online network acts everywhere.
        self.averaged_network: QNetwork | None = None
        self._averaged_params: list[torch.nn.Parameter] = []
        if config.policy_averaging > 0:
            self.averaged_network = copy.deepcopy(self.q_network)
            self.averaged_network.requires_grad_(False)
            self.averaged_network.eval()
            self._averaged_params = list(self.averaged_network.parameters())
        self.optimizer = _make_adam(self._online_params, config.learning_rate, config.weight_decay)

        # Mixed precision: fp16 (+GradScaler) or bf16 on CUDA; bf16 on CPU only when asked for.
        self._amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        if config.precision == "bf16" and self.device.type in ("cuda", "cpu"):
            self._amp_dtype = torch.bfloat16
        elif config.precision == "fp16" and self.device.type == "cuda":
            self._amp_dtype = torch.float16
            self.scaler = torch.amp.GradScaler("cuda")

        replay_cls = PrioritizedReplayBuffer if config.prioritized_replay else ReplayBuffer
        kwargs: dict[str, Any] = {}
        if config.prioritized_replay:
            kwargs = {"alpha": config.priority_alpha, "beta": config.priority_beta}
        self.replay: ReplayBuffer = _reserve_replay(
            replay_cls,
            config.buffer_size,
            state_size,
            device=replay_device(config, self.device),
            output_device=self.device,
            state_dtype=config.replay_state_dtype,
            seed=config.seed + 1,
            **kwargs,
        )
        self._nstep: dict[int, NStepAccumulator] = {}  # one per number of parallel envs
        self._gamma_powers = config.gamma ** torch.arange(
            config.n_step + 1, dtype=torch.float32, device=self.device
        )
        # QR-DQN's quantile midpoints tau_i = (i + 0.5) / N.
        quantile_index = torch.arange(config.n_quantiles, dtype=torch.float32, device=self.device)
        self._quantile_taus = (quantile_index + 0.5) / max(1, config.n_quantiles)

        self._explore_rng = np.random.default_rng(config.seed)
        # Exploration for tensor batches draws on the training device, so acting never syncs with the host.
        self._device_rng = torch.Generator(device=self.device)
        self._device_rng.manual_seed(config.seed + 2)
        self._host_q: HostQFunction | None = None  # numpy view of q_network for acting on the CPU
        self._host_policy_q: HostQFunction | None = None  # numpy view of averaged_network
        # Dropout masks of the learning forward pass; None without dropout (no draws, same arithmetic).
        self._dropout_rng = torch.Generator(device=self.device)
        self._dropout_rng.manual_seed(config.seed + 3)
        self._learning_noise = self._dropout_rng if config.dropout > 0 else None
        # observation_noise jitters the market columns only: the account features (position, unrealised
        # P&L, drawdown) are the agent's own exact state, not noisy market readings.
        self._market_columns = max(0, state_size - len(ACCOUNT_FEATURE_NAMES))

        self.steps = 0  # transitions remembered
        self.updates = 0  # learning steps taken
        self._epsilon_progress = 0  # transitions counted by decay_epsilon
        self._epsilon = config.epsilon_start
        self._batch_times: deque[float] = deque(maxlen=_STATS_WINDOW)
        self._losses: deque[torch.Tensor] = deque(maxlen=_STATS_WINDOW)
        self._process = psutil.Process()
        self.checkpoint_metadata: dict[str, Any] = {}  # extra_metadata of the checkpoint loaded last

    # --- acting ----------------------------------------------------------------------------
    def act(self, states: np.ndarray | torch.Tensor, explore: bool = True) -> Any:
        """Epsilon-greedy actions (greedy when ``explore`` is False).

        - one state (a 1-D array): an ``int``;
        - a batch of host states ``(N, state_size)``: an int64 numpy array (one forward pass,
          exploration drawn per row). On the CPU the network runs in numpy on views of its own
          weights, a third of torch's per-call cost at small batches;
        - a tensor batch: an int64 tensor on the agent's device; nothing crosses to the host, so an
          environment that lives on the GPU is never synchronised with.
        """
        if isinstance(states, torch.Tensor):
            return self._act_on_device(states, explore)
        states = np.asarray(states, dtype=np.float32)
        if states.ndim == 1:
            if explore and self._explore_rng.random() < self._epsilon:
                return int(self._explore_rng.integers(self.action_size))
            return int(self._greedy_on_host(states.reshape(1, -1))[0])
        n = states.shape[0]
        if not explore:
            return self._greedy_on_host(states)
        random_rows = self._explore_rng.random(n) < self._epsilon
        random_actions = self._explore_rng.integers(self.action_size, size=n)
        if random_rows.all():
            return random_actions.astype(np.int64)
        actions = self._greedy_on_host(states)
        actions[random_rows] = random_actions[random_rows]
        return actions

    def _greedy_on_host(self, states: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) (int64) for a float32 batch of host states."""
        states = np.ascontiguousarray(states, dtype=np.float32)
        if self.device.type == "cpu":
            return self._online_host_q()(states).argmax(axis=1).astype(np.int64)
        with torch.inference_mode():
            q = self.q_network(torch.from_numpy(states).to(self.device))
            return q.argmax(dim=1).cpu().numpy().astype(np.int64)

    def _act_on_device(self, states: torch.Tensor, explore: bool) -> torch.Tensor:
        with torch.inference_mode():
            greedy = self.q_network(states).argmax(dim=1)
        if not explore:
            return greedy
        n = states.shape[0]
        random_rows = torch.rand(n, generator=self._device_rng, device=self.device) < self._epsilon
        random_actions = torch.randint(
            self.action_size, (n,), generator=self._device_rng, device=self.device
        )
        return torch.where(random_rows, random_actions, greedy)

    @property
    def policy_network(self) -> QNetwork:
        """The network that acts out of sample: the averaged weights with ``policy_averaging``, else
        the online network. Training's own acting (``act``) always uses the online network."""
        return self.averaged_network if self.averaged_network is not None else self.q_network

    def host_q_function(self) -> HostQFunction:
        """The out-of-sample Q-function (``policy_network``) in numpy on the host, for validation,
        backtests and live trading: live views of the weights on the CPU; on another device a copy of
        the weights as they are now (for bar-by-bar backtests that must not wait for the GPU at every
        bar)."""
        network = self.policy_network
        if self.device.type != "cpu":
            return HostQFunction(copy.deepcopy(network).to("cpu"))
        if network is self.q_network:
            return self._online_host_q()
        if self._host_policy_q is None or self._host_policy_q.network is not network:
            self._host_policy_q = HostQFunction(network)
        return self._host_policy_q

    def _online_host_q(self) -> HostQFunction:
        """Live numpy views of the online network's weights (CPU only), for training's acting."""
        if self._host_q is None or self._host_q.network is not self.q_network:
            self._host_q = HostQFunction(self.q_network)
        return self._host_q

    # --- remembering -----------------------------------------------------------------------
    def remember(
        self,
        state: np.ndarray,
        action: int,
        reward: float,
        next_state: np.ndarray,
        done: bool,
        truncated: bool = False,
    ) -> None:
        """Store one transition. ``done`` = terminal (no bootstrap); ``truncated`` = time limit.

        With ``n_step > 1`` transitions go through an n-step accumulator first.
        """
        if self.config.n_step == 1:
            self.steps += 1
            self.replay.add(state, action, reward, next_state, done)
            return
        self.remember_batch(np.asarray(state)[None], np.asarray([action]), np.asarray([reward]),
                            np.asarray(next_state)[None], np.asarray([done]), np.asarray([truncated]))

    def remember_batch(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_states: np.ndarray,
        dones: np.ndarray,
        truncated: np.ndarray | None = None,
    ) -> None:
        """Store one step of N parallel environments (arrays with N rows).

        For n-step returns the rows must be the same environments in the same order every call.
        """
        self.steps += len(states)
        if self.config.n_step == 1:
            self.replay.add_batch(states, actions, rewards, next_states, dones)
            return
        states = np.asarray(states)
        ready = self._push_nstep_accumulator(len(states)).push(
            states, np.asarray(actions), np.asarray(rewards), np.asarray(next_states), np.asarray(dones), truncated
        )
        if ready is not None:
            self.replay.add_batch(*ready)

    def _push_nstep_accumulator(self, num_envs: int) -> NStepAccumulator:
        """The n-step accumulator for ``num_envs`` parallel environments (created on first use)."""
        acc = self._nstep.get(num_envs)
        if acc is None:
            acc = self._nstep[num_envs] = NStepAccumulator(
                self.config.n_step, self.config.gamma, num_envs, self.state_size
            )
        return acc

    # --- learning --------------------------------------------------------------------------
    def compute_td_targets(
        self,
        rewards: torch.Tensor,
        next_states: torch.Tensor,
        dones: torch.Tensor,
        horizons: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Double-DQN targets: r + gamma^h (1 - done) Q_target(s', argmax_a Q_online(s', a))."""
        with torch.no_grad():
            best = self.q_network(next_states).argmax(dim=1, keepdim=True)
            next_q = self.target_network(next_states).gather(1, best).squeeze(1).float()
            discount = self._gamma_powers[1] if horizons is None else self._gamma_powers[horizons]
            return rewards + discount * (1.0 - dones) * next_q

    def augmented(self, batch: ReplaySample) -> ReplaySample:
        """``batch`` with ``observation_noise`` Gaussian noise on the market features of its states and
        next states (each drawn independently, from the learning-noise generator, so a seed gives the
        same run); the batch itself when the noise is 0."""
        sigma = self.config.observation_noise
        if not sigma or not self._market_columns:
            return batch
        return dataclasses.replace(batch, states=self._jittered(batch.states, sigma),
                                   next_states=self._jittered(batch.next_states, sigma))

    def _jittered(self, states: torch.Tensor, sigma: float) -> torch.Tensor:
        columns = self._market_columns
        noise = torch.randn((states.shape[0], columns), generator=self._dropout_rng, device=states.device,
                            dtype=states.dtype)
        jittered = states.clone()
        jittered[:, :columns] += sigma * noise
        return jittered

    def _micro_batch_loss(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """(Huber loss averaged over the micro-batch, absolute TD errors)."""
        if self.q_network.n_quantiles:
            return self._quantile_loss(batch)
        horizons = None if self.config.n_step == 1 else batch.horizons
        targets = self.compute_td_targets(batch.rewards, batch.next_states, batch.dones, horizons)
        q = self.q_network(batch.states, self._learning_noise).gather(1, batch.actions.unsqueeze(1)).squeeze(1).float()
        if batch.weights is None:
            loss = F.huber_loss(q, targets, delta=1.0)
        else:
            loss = (batch.weights * F.huber_loss(q, targets, delta=1.0, reduction="none")).mean()
        return loss, (q - targets).detach().abs()

    def _quantile_loss(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """QR-DQN's quantile regression loss (Dabney et al., 2018) with double-DQN action choice.

        Target quantiles ``r + gamma^h (1 - done) theta_j(s', a*)``, ``a*`` the online network's
        best action by mean; each predicted quantile ``theta_i(s, a)`` at ``tau_i = (i + 0.5) / N``
        pays the pinball loss ``delta_ij * (tau_i - 1{delta_ij < 0})`` for every target ``j``
        (``delta_ij = target_j - theta_i``): summed over ``i``, averaged over ``j``. The pinball loss
        rather than the paper's Huber-smoothed one (kappa 1): returns here are a few hundredths, inside
        any kappa-1 quadratic zone, where the minimiser would be an expectile, not a quantile.
        Returns the loss averaged over the batch (importance-weighted under prioritised replay) and
        each sample's mean absolute ``delta`` as its TD error.
        """
        rows = torch.arange(batch.actions.shape[0], device=batch.actions.device)
        discount = self._gamma_powers[1] if self.config.n_step == 1 else self._gamma_powers[batch.horizons]
        with torch.no_grad():
            best = self.q_network(batch.next_states).argmax(dim=1)
            next_quantiles = self.target_network.quantiles(batch.next_states)[rows, best].float()
            targets = batch.rewards.unsqueeze(1) + (discount * (1.0 - batch.dones)).unsqueeze(1) * next_quantiles
        predicted = self.q_network.quantiles(batch.states, self._learning_noise)[rows, batch.actions].float()
        delta = targets.unsqueeze(1) - predicted.unsqueeze(2)  # (batch, predicted i, target j)
        pinball = delta * (self._quantile_taus.view(1, -1, 1) - (delta.detach() < 0).float())
        per_sample = pinball.sum(dim=1).mean(dim=1)
        loss = per_sample.mean() if batch.weights is None else (batch.weights * per_sample).mean()
        return loss, delta.detach().abs().mean(dim=(1, 2))

    def learn(self) -> float | None:
        """One learning step; returns its loss, or None until ``learning_starts`` transitions are stored.

        Reading the loss waits for the device; loops on a GPU call ``learn_tensor`` instead.
        """
        loss = self.learn_tensor()
        return None if loss is None else float(loss)

    def learn_tensor(self) -> torch.Tensor | None:
        """``learn`` without the device sync: the loss stays a 0-d tensor on the device, so the host can
        queue the next steps while the GPU works (a float per step would stall it every step).

        The step draws ``batch_size * gradient_accumulation_steps`` indices at once, then runs
        ``gradient_accumulation_steps`` micro-batches of ``batch_size``, each loss divided by the
        number of micro-batches: the summed gradient equals the gradient of one big batch.
        Then: grad-norm clipping, one Adam step, and the target-network update.
        """
        cfg = self.config
        if len(self.replay) == 0 or len(self.replay) < cfg.learning_starts:
            return None
        start = time.perf_counter()
        micro, accum = cfg.batch_size, cfg.gradient_accumulation_steps
        indices, weights = self.replay.sample_indices(micro * accum)
        autocast = (
            torch.autocast(self.device.type, dtype=self._amp_dtype)
            if self._amp_dtype
            else contextlib.nullcontext()
        )

        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=self.device)
        td_errors = []
        for k in range(accum):
            part = slice(k * micro, (k + 1) * micro)
            batch = self.augmented(self.replay.gather(indices[part], None if weights is None else weights[part],
                                                      with_horizons=cfg.n_step > 1))
            with autocast:
                loss, td = self._micro_batch_loss(batch)
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total_loss += loss.detach()
            td_errors.append(td)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self._online_params, cfg.max_grad_norm, foreach=True)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if isinstance(self.replay, PrioritizedReplayBuffer):
            self.replay.update_priorities(indices, torch.cat(td_errors))

        self.updates += 1
        self._update_target()
        self._update_average()
        loss = total_loss / accum
        # Host time: on a GPU this is the time to queue the step, not to run it.
        self._batch_times.append(time.perf_counter() - start)
        self._losses.append(loss)
        return loss

    # --- target network --------------------------------------------------------------------
    def _update_target(self) -> None:
        """Called by ``learn`` after every step: hard copy every N steps, or Polyak averaging."""
        if self.config.target_update == "polyak":
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._online_params, self.config.tau)
        elif self.updates % self.config.target_update_interval == 0:
            self.update_target_model()

    def _update_average(self) -> None:
        """Move the averaged weights toward the online ones (with ``policy_averaging``; else nothing).

        The decay warms up as (1 + updates) / (10 + updates) until it reaches ``policy_averaging``
        (TensorFlow's ExponentialMovingAverage rule), so the first validations are not dominated by
        the random initial weights."""
        if self.averaged_network is None:
            return
        decay = min(self.config.policy_averaging, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self._averaged_params, self._online_params, 1.0 - decay)

    def update_target_model(self) -> None:
        """Copy the online weights into the target network."""
        with torch.no_grad():
            torch._foreach_copy_(self._target_params, self._online_params)

    # --- exploration -----------------------------------------------------------------------
    def epsilon_at(self, transitions: int) -> float:
        """Linear schedule: epsilon_start -> epsilon_end over epsilon_decay_steps transitions.

        ``epsilon_decay_steps=None`` (the trainer fills it from the run length) means
        ``STANDALONE_EPSILON_DECAY_STEPS`` for an agent used on its own.
        """
        cfg = self.config
        fraction = min(1.0, transitions / (cfg.epsilon_decay_steps or STANDALONE_EPSILON_DECAY_STEPS))
        return cfg.epsilon_start + fraction * (cfg.epsilon_end - cfg.epsilon_start)

    def decay_epsilon(self, steps: int = 1) -> float:
        """Advance the schedule by ``steps`` transitions (the trainer calls this; ``remember`` does not)."""
        self._epsilon_progress += int(steps)
        self._epsilon = self.epsilon_at(self._epsilon_progress)
        return self._epsilon

    @property
    def epsilon(self) -> float:
        """Current exploration rate."""
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        """Override epsilon (e.g. 0 for evaluation); the next ``decay_epsilon`` returns to the schedule."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {value}")
        self._epsilon = float(value)

    # --- monitoring ------------------------------------------------------------------------
    def get_performance_stats(self) -> dict[str, Any]:
        """Live numbers over the last 100 learn() calls.

        ``avg_memory_usage_gb`` is ``torch.cuda.max_memory_allocated`` (GiB) on CUDA and the
        process's resident set size (psutil RSS, GiB) elsewhere. ``samples_per_sec`` counts gradient
        samples (batch x accumulation) per second of learn() time.
        """
        times = list(self._batch_times)
        learn_time = sum(times)
        if self.device.type == "cuda":
            memory = torch.cuda.max_memory_allocated(self.device)
        else:
            memory = self._process.memory_info().rss
        return {
            "avg_batch_time_ms": 1000.0 * learn_time / len(times) if times else 0.0,
            "avg_memory_usage_gb": memory / 1024**3,
            "recent_loss": float(torch.stack(list(self._losses)).mean()) if self._losses else None,
            "buffer_size": len(self.replay),
            "epsilon": self._epsilon,
            "device": str(self.device),
            "updates": self.updates,
            "steps": self.steps,
            "samples_per_sec": len(times) * self.config.effective_batch_size / learn_time
            if learn_time
            else 0.0,
            "model_size": self.config.model_size,
            "parameters": count_parameters(self.q_network),
            "batch_size": self.config.batch_size,
            "gradient_accumulation_steps": self.config.gradient_accumulation_steps,
        }

    # --- runtime adaptation ----------------------------------------------------------------
    def set_batch_size(self, batch_size: int, gradient_accumulation_steps: int | None = None) -> None:
        """Change the micro-batch (and accumulation) at runtime, e.g. halve batch and double
        accumulation after an out-of-memory error to keep the effective batch."""
        overrides: dict[str, Any] = {"batch_size": batch_size}
        if gradient_accumulation_steps is not None:
            overrides["gradient_accumulation_steps"] = gradient_accumulation_steps
        self.config = self.config.with_overrides(overrides)

    # --- state and checkpoints -------------------------------------------------------------
    def state_dict(self, include_replay: bool = False) -> dict[str, Any]:
        """Everything needed to rebuild this agent (tensors and plain containers only); with the
        replay memory and n-step windows it resumes bit-exactly."""
        return {
            "state_size": self.state_size,
            "action_size": self.action_size,
            "config": self.config.to_dict(),
            "q_network": self.q_network.state_dict(),
            "target_network": self.target_network.state_dict(),
            "averaged_network": self.averaged_network.state_dict() if self.averaged_network is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "counters": {"steps": self.steps, "updates": self.updates, "epsilon_progress": self._epsilon_progress},
            "epsilon": self._epsilon,
            "rng": {
                "explore": self._explore_rng.bit_generator.state,
                "replay": self.replay.generator.get_state(),
                "replay_device_type": self.replay.generator.device.type,
                "device_explore": self._device_rng.get_state().cpu(),
                "dropout": self._dropout_rng.get_state().cpu(),
                "device_type": self.device.type,
            },
            "replay": self.replay.state_dict() if include_replay else None,
            "nstep": {n: acc.state_dict() for n, acc in self._nstep.items()} if include_replay else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` into this agent, whose sizes and network must match it.

        Kernel choices (fused/foreach Adam) and the device stay this machine's. A state that does not
        fit raises ValueError naming what differs.
        """
        sizes = (state.get("state_size"), state.get("action_size"))
        if sizes != (self.state_size, self.action_size):
            raise ValueError(f"state is for state_size={sizes[0]}, action_size={sizes[1]}; this agent has "
                             f"{self.state_size}, {self.action_size}")
        replay = state.get("replay")
        if replay is not None:
            _check_replay_state(replay, self.state_size, self.config.buffer_size)
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        if self.averaged_network is not None:
            # A state saved without averaging starts the average at its online weights.
            averaged = state.get("averaged_network")
            self.averaged_network.load_state_dict(averaged if averaged is not None else state["q_network"])
        flags = {k: self.optimizer.param_groups[0].get(k) for k in ("fused", "foreach")}
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group.update(flags)  # kernels are this machine's choice, not the saving machine's
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        counters = state["counters"]
        self.steps, self.updates = int(counters["steps"]), int(counters["updates"])
        self._epsilon_progress = int(counters["epsilon_progress"])
        self.epsilon = float(state["epsilon"])
        rng = state["rng"]
        self._explore_rng.bit_generator.state = rng["explore"]
        if replay is not None:
            self.replay.load_state_dict(replay)
        self.replay.set_generator_state(rng["replay"], rng.get("replay_device_type", "cpu"))
        if rng.get("device_explore") is not None and rng.get("device_type") == self.device.type:
            self._device_rng.set_state(rng["device_explore"])  # fits only a generator of the same device type
        if rng.get("dropout") is not None and rng.get("device_type") == self.device.type:
            self._dropout_rng.set_state(rng["dropout"])
        self._nstep = {}
        for num_envs, acc_state in (state.get("nstep") or {}).items():
            self._push_nstep_accumulator(int(num_envs)).load_state_dict(acc_state)
        self._host_q = None
        self._host_policy_q = None

    def save(
        self, path: str | Path, extra_metadata: dict[str, Any] | None = None, include_replay: bool = False
    ) -> int:
        """Write a verified checkpoint (``nexlify.serialization``); returns its size in bytes.

        ``extra_metadata`` (JSON-safe) comes back as ``checkpoint_metadata`` of the loaded agent.
        """
        meta = {"agent": type(self).__name__, "state_size": self.state_size, "action_size": self.action_size,
                "model_size": self.config.model_size, "config": self.config.to_dict(),
                "metadata": dict(extra_metadata or {})}
        return write_checkpoint(path, meta, self.state_dict(include_replay), self.config.checkpoint_compression)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, **config_overrides: Any
                        ) -> AdaptiveDQNAgent:
        """A new agent built from a checkpoint: the file's sizes, model and weights; ``device`` None =
        the file's device if available here, else the CPU. ``config_overrides`` replace settings of
        the file's config (e.g. this machine's thread count). Any problem raises CheckpointError."""
        checkpoint = read_checkpoint(path)
        meta = checkpoint.meta
        state_size, action_size = _checked_sizes(meta, path)
        saved = meta.get("config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint {path} is corrupt: its config is not a JSON object")
        target = device if device is not None else usable_device_or_cpu(str(saved.get("device", "cpu")))
        try:
            config = TrainingConfig.from_dict({**saved, **config_overrides, "device": target})
            agent = cls(state_size, action_size, config)
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {path} cannot be used here: {exc}") from None
        try:
            agent.load_state_dict(checkpoint.state)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"checkpoint {path}: its state does not fit the network it describes: "
                                  f"{first_line}") from None
        metadata = meta.get("metadata", {})
        if not isinstance(metadata, dict):
            raise CheckpointError(f"checkpoint {path} is corrupt: its metadata is not a JSON object")
        agent.checkpoint_metadata = metadata
        return agent

    def load(self, path: str | Path, check_sizes: bool = False) -> dict[str, Any]:
        """Become the checkpoint's agent: its sizes, model size, weights, optimizer and counters, on this
        agent's device and thread count (an agent created 'tiny' loading an 'xlarge' file becomes
        xlarge). With ``check_sizes`` another state/action size raises CheckpointError. A bad file
        raises CheckpointError and leaves this agent as it was. Returns the file's metadata."""
        loaded = type(self).from_checkpoint(path, device=self.config.device, num_workers=self.config.num_workers)
        if check_sizes and (loaded.state_size, loaded.action_size) != (self.state_size, self.action_size):
            raise CheckpointError(
                f"checkpoint {path} was trained with state_size={loaded.state_size}, action_size="
                f"{loaded.action_size} but this agent has state_size={self.state_size}, action_size="
                f"{self.action_size}; the features or actions changed since it was saved")
        self._build(loaded.state_size, loaded.action_size, loaded.config)
        self.load_state_dict(loaded.state_dict(include_replay=True))
        self.checkpoint_metadata = loaded.checkpoint_metadata
        return self.checkpoint_metadata


MAX_STATE_SIZE = 100_000  # far above any feature set; stops a crafted header from sizing huge networks
MAX_ACTION_SIZE = 1_000


def _checked_sizes(meta: dict[str, Any], path: str | Path) -> tuple[int, int]:
    sizes = []
    for key, high in (("state_size", MAX_STATE_SIZE), ("action_size", MAX_ACTION_SIZE)):
        value = meta.get(key)
        if type(value) is not int or not 1 <= value <= high:
            raise CheckpointError(f"checkpoint {path} is corrupt: {key} must be a whole number from 1 to {high:,}, "
                                  f"got {value!r}")
        sizes.append(value)
    return sizes[0], sizes[1]


def _check_replay_state(replay: Any, state_size: int, buffer_size: int) -> None:
    """ValueError unless a saved replay is self-consistent (sizes, shapes) and no larger than the
    config's ``buffer_size``, before anything is allocated or copied."""
    size, capacity, allocated = replay.get("size"), replay.get("capacity"), replay.get("allocated")
    counts = (size, capacity, allocated)
    if any(type(v) is not int for v in counts) or not 0 <= size <= capacity <= allocated <= buffer_size:
        raise ValueError(f"replay size {size!r} / capacity {capacity!r} / allocated {allocated!r} do not fit "
                         f"buffer_size {buffer_size}")
    for name in ("states", "next_states"):
        tensor = replay.get(name)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (size, state_size):
            raise ValueError(f"replay {name} has shape {getattr(tensor, 'shape', None)}, expected ({size}, "
                             f"{state_size})")
    for name in ("actions", "rewards", "dones", "horizons"):
        tensor = replay.get(name)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (size,):
            raise ValueError(f"replay {name} has shape {getattr(tensor, 'shape', None)}, expected ({size},)")
