"""The training loop: parallel environments -> replay -> DQN updates, with validation and checkpoints.

Work is counted in episodes: one episode is one pass of one account over the training split, so the
workload (episodes x window) is the same on every machine. Episodes run in rounds of up to
``parallel_envs`` accounts stepped together; a round's size divides ``save_interval`` (or is a
multiple of it) so that ``checkpoint_ep{N}.pth`` lands exactly on multiples of it, and every
checkpoint sits on a round boundary, which makes ``--resume`` exact. Each time the transitions
collected reach another ``eval_interval`` episodes' worth (inside a round too, so a GPU stepping all
accounts in one round validates as often as a laptop) the greedy policy is scored on the validation
split; ``best_model.pth`` is the best by that score (``validation_metric``: Sharpe by default), never
by a training episode.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.market import MarketSlice, MarketSplits
from nexlify.env.vector import TorchVectorTradingEnv, VectorTradingEnv
from nexlify.errors import CheckpointError
from nexlify.evaluation.backtest import agent_policy, run_policy
from nexlify.hardware.cpu import detect_cpu, thread_candidates
from nexlify.hardware.units import GB
from nexlify.training.monitor import TrainingMonitor

ACTION_SIZE = 3
BEST_MODEL = "best_model.pth"
FINAL_MODEL = "final_model.pth"
INTERRUPTED_CHECKPOINT = "checkpoint_interrupted.pth"
MEMORY_CHECK_EVERY_STEPS = 256
# A round under this share of the profiler's projected speed times the other torch thread counts.
SLOW_PACE_FRACTION = 0.75
# Settings that belong to the machine running the job, not to the run being resumed.
MACHINE_SETTINGS = ("device", "num_workers", "use_mixed_precision", "precision", "env_backend",
                    "optimization_level", "memory_reserve_gb")


def round_size(parallel_envs: int, save_interval: int, remaining: int) -> int:
    """Accounts in the next round, chosen so rounds end exactly on multiples of ``save_interval``.

    Up to ``save_interval`` envs: the largest divisor of it; more (GPUs run thousands): the largest
    multiple of it. Never more than the episodes remaining.
    """
    if parallel_envs >= save_interval:
        size = parallel_envs // save_interval * save_interval
    else:
        size = max(d for d in range(1, parallel_envs + 1) if save_interval % d == 0)
    return min(size, remaining)


def is_out_of_memory(error: BaseException) -> bool:
    """True for the out-of-memory errors of CUDA, ROCm (same class) and MPS."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass
class RoundOutcome:
    """What one round produced: transitions stored, mean loss, and each account's first episode."""

    transitions: int
    mean_loss: float | None
    episode_rewards: np.ndarray
    final_equity: np.ndarray


@dataclass
class TrainingState:
    """Everything the loop needs to continue exactly where a checkpoint left off (JSON-safe)."""

    episodes_done: int = 0
    transitions: int = 0
    learn_credit: float = 0.0
    best_score: float | None = None
    best_episode: int | None = None
    last_eval_mark: int = 0
    replay_frozen: bool = False
    train_seconds: float = 0.0
    episodes: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingState:
        return cls(**values)


class Trainer:
    """Trains an ``AdaptiveDQNAgent`` on ``splits.train`` per ``config``; see the module docstring."""

    def __init__(
        self,
        config: TrainingConfig,
        splits: MarketSplits,
        output_dir: str | Path,
        monitor: TrainingMonitor | None = None,
        resume_from: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.splits = splits
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.monitor = monitor or TrainingMonitor(config.episodes, quiet=True)
        self.episode_steps = len(splits.train) - 1
        self.metadata = dict(metadata or {})
        total = config.episodes * self.episode_steps
        if config.epsilon_decay_steps is None:
            # Exploration decays by transitions over a fixed fraction of the whole workload.
            config = config.with_overrides(
                {"epsilon_decay_steps": max(1, int(config.exploration_fraction * total))}
            )
        self.config = config
        if resume_from is not None:
            self.agent, self.state = self._resume(Path(resume_from))
        else:
            self.agent = AdaptiveDQNAgent(self.market_state_size, ACTION_SIZE, config)
            self.state = TrainingState()
        # The profiler's measured speed for this setting (transitions/s); None: nothing to compare with.
        self.expected_transitions_per_s: float | None = None
        self._thread_trial: dict[int, float] | None = None  # rates per thread count once a round ran slow
        self._pace_settled = False

    @property
    def uses_device_envs(self) -> bool:
        """True when the environments run as torch tensors on the training device."""
        backend = self.config.env_backend
        return backend == "torch" or (backend == "auto" and self.agent.device.type != "cpu")

    @property
    def market_state_size(self) -> int:
        from nexlify.data.features import ACCOUNT_FEATURE_NAMES

        return self.splits.train.features.shape[1] + len(ACCOUNT_FEATURE_NAMES)

    # --- the loop ----------------------------------------------------------------------
    def train(self) -> TrainingState:
        """Run until ``config.episodes`` episodes are complete. Ctrl-C saves a checkpoint first."""
        try:
            while self.state.episodes_done < self.config.episodes:
                started = time.perf_counter()
                remaining = self.config.episodes - self.state.episodes_done
                n_envs = round_size(self.config.parallel_envs, self.config.save_interval, remaining)
                outcome = self.run_round(n_envs)
                self.state.train_seconds += time.perf_counter() - started
                self._after_round(outcome, time.perf_counter() - started)
        except KeyboardInterrupt:
            path = self.output_dir / INTERRUPTED_CHECKPOINT
            self._save(path, include_replay=True)
            self.monitor.log(f"interrupted: saved {path}; continue with --resume {path}")
            raise
        self._save(self.output_dir / FINAL_MODEL, include_replay=False)
        if self.state.best_score is None:
            # No validation ran (tiny runs): the final model is the only candidate.
            self._save(self.output_dir / BEST_MODEL, include_replay=False)
        return self.state

    def run_round(self, n_envs: int) -> RoundOutcome:
        """One round of the loop: ``n_envs`` accounts through one episode each, storing and learning
        as due (what the hardware profiler times in its bursts)."""
        return self._run_round_on_device(n_envs) if self.uses_device_envs else self._run_round(n_envs)

    def _run_round(self, n_envs: int) -> RoundOutcome:
        """Step ``n_envs`` accounts through one episode each, storing and learning as we go."""
        cfg, agent = self.config, self.agent
        env = VectorTradingEnv(self.splits.train, num_envs=n_envs, initial_balance=cfg.initial_balance,
                               fee=cfg.fee, slippage=cfg.slippage, reward_mode=cfg.reward_mode)
        obs, _ = env.reset()
        active = np.ones(n_envs, dtype=bool)
        episode_reward = np.zeros(n_envs)
        final_equity = np.full(n_envs, cfg.initial_balance)
        losses: list[torch.Tensor] = []
        stored = 0
        for step in range(self.episode_steps):
            actions = agent.act_batch(obs, explore=True)
            next_obs, reward, terminated, truncated, info = env.step(actions)
            done = terminated | truncated
            real_next = next_obs
            if done.any():
                real_next = next_obs.copy()
                real_next[done] = info["final_obs"][done]
            # Every account is stored every step (n-step windows are kept per account row); an
            # account ruined early restarts, and only its first episode counts for this round.
            agent.remember_batch(obs, actions, reward, real_next, terminated, truncated=truncated)
            episode_reward += np.where(active, reward, 0.0)
            final_equity = np.where(active & done, info["equity"], final_equity)
            active &= ~done
            stored += n_envs
            self._learn_as_due(n_envs, step, losses)
            self._validate_if_due(n_envs, step + 1)
            obs = next_obs
            if not active.any():
                break
        self.state.transitions += stored
        return RoundOutcome(stored, _mean_loss(losses), episode_reward, final_equity)

    def _run_round_on_device(self, n_envs: int) -> RoundOutcome:
        """The same round with environments, actions and replay all on the training device.

        Nothing crosses to the host inside the loop except the loss values ``learn`` returns.
        All accounts run the full window (an account ruined early restarts and keeps collecting).
        """
        cfg, agent = self.config, self.agent
        env = TorchVectorTradingEnv(self.splits.train, n_envs, initial_balance=cfg.initial_balance, fee=cfg.fee,
                                    slippage=cfg.slippage, reward_mode=cfg.reward_mode, device=agent.device)
        obs = env.reset()
        first_episode = torch.ones(n_envs, dtype=torch.bool, device=agent.device)
        episode_reward = torch.zeros(n_envs, dtype=torch.float64, device=agent.device)
        final_equity = torch.full((n_envs,), cfg.initial_balance, dtype=torch.float64, device=agent.device)
        losses: list[torch.Tensor] = []
        for step in range(self.episode_steps):
            actions = agent.act_tensor(obs, explore=True)
            result = env.step(actions)
            real_next = torch.where(result.done.unsqueeze(1), result.final_obs, result.obs)
            agent.remember_batch(obs, actions, result.reward, real_next, result.terminated,
                                 truncated=result.truncated)
            episode_reward += torch.where(first_episode, result.reward.double(), 0.0)
            final_equity = torch.where(first_episode & result.done, result.final_equity, final_equity)
            first_episode &= ~result.done
            self._learn_as_due(n_envs, step, losses)
            self._validate_if_due(n_envs, step + 1)
            obs = result.obs
        stored = n_envs * self.episode_steps
        self.state.transitions += stored
        return RoundOutcome(stored, _mean_loss(losses), episode_reward.cpu().numpy(), final_equity.cpu().numpy())

    def _learn_as_due(self, new_transitions: int, step: int, losses: list[torch.Tensor]) -> None:
        """After storing ``new_transitions``: decay exploration, take the learning steps now due
        (one per ``train_frequency`` transitions), and now and then check host memory."""
        self.agent.decay_epsilon(new_transitions)
        self.state.learn_credit += new_transitions
        while self.state.learn_credit >= self.config.train_frequency:
            self.state.learn_credit -= self.config.train_frequency
            loss = self._learn()
            if loss is not None:
                losses.append(loss)
        if step % MEMORY_CHECK_EVERY_STEPS == 0:
            self._guard_host_memory()

    def _learn(self) -> torch.Tensor | None:
        """One learning step; on out-of-memory halve the batch, double accumulation, and retry.

        The loss stays on the device (no per-step sync); the round reads all of them once at its end.
        """
        while True:
            try:
                return self.agent.learn_tensor()
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or self.agent.config.batch_size <= 1:
                    raise
                old = self.agent.config.batch_size
                accumulation = self.agent.config.gradient_accumulation_steps
                self.agent.set_batch_size(old // 2, accumulation * 2)
                _empty_device_cache(self.agent.device)
                self._event("oom_adapt", f"out of memory at batch {old}: batch {old // 2} x "
                            f"{accumulation * 2} accumulation keeps the effective batch {old * accumulation}")

    def _guard_host_memory(self) -> None:
        """Stop replay growth before the OS runs out of memory."""
        if self.state.replay_frozen:
            return
        available_gb = available_memory_gb()
        if available_gb < self.config.memory_reserve_gb:
            self.agent.replay.freeze_growth()
            self.state.replay_frozen = True
            self._event("replay_frozen", f"free RAM {available_gb:.2f} GB < reserve "
                        f"{self.config.memory_reserve_gb} GB: replay stops growing at {len(self.agent.replay):,}")

    def _keep_pace(self, outcome: RoundOutcome, rate: float) -> None:
        """The first round that learned throughout: if it ran well below the profiler's projection,
        time the next rounds at the other torch thread counts and keep the fastest (an adaptation
        event). On a loaded machine more threads can run the loop several times slower, which only
        the real loop shows, and the load may have changed since the profile was measured."""
        expected = self.expected_transitions_per_s
        if self._pace_settled or expected is None:
            return
        if self._thread_trial is None:
            if self.state.transitions - outcome.transitions < self.config.learning_starts:
                return  # part of this round only collected: faster than the run will be
            if rate >= SLOW_PACE_FRACTION * expected:
                self._pace_settled = True
                return
            self._thread_trial = {}
            self._event("slow_pace", f"{rate:,.0f} transitions/s, {rate / expected:.0%} of the projected "
                        f"{expected:,.0f}: timing the next rounds at the other torch thread counts")
        self._thread_trial[self.config.num_workers] = rate
        untried = [n for n in thread_candidates(detect_cpu().compute_cores) if n not in self._thread_trial]
        if untried and self.state.episodes_done + len(outcome.episode_rewards) < self.config.episodes:
            self._set_threads(untried[0])
            return
        self._pace_settled = True
        best = max(self._thread_trial, key=lambda n: (self._thread_trial[n], -n))  # type: ignore[index]
        self._set_threads(best)
        rates = ", ".join(f"{n}: {r:,.0f}" for n, r in sorted(self._thread_trial.items()))
        self._event("threads_adapted", f"{best} torch thread(s): fastest in this run (threads: transitions/s "
                    f"{rates})")

    def _set_threads(self, threads: int) -> None:
        """Run the network math with ``threads`` torch threads from now on (and record it in the config)."""
        torch.set_num_threads(threads)
        self.config = self.config.with_overrides({"num_workers": threads})
        self.agent.config = self.agent.config.with_overrides({"num_workers": threads})

    def _event(self, kind: str, message: str) -> None:
        self.state.events.append({"episode": self.state.episodes_done, "kind": kind, "message": message})
        self.monitor.log(f"[yellow]{message}[/yellow]")

    def _after_round(self, outcome: RoundOutcome, seconds: float) -> None:
        stats = self.agent.get_performance_stats()
        stats["transitions_per_sec"] = outcome.transitions / max(seconds, 1e-9)
        average = self.state.transitions / max(self.state.train_seconds, 1e-9)
        remaining = self.config.episodes - self.state.episodes_done - len(outcome.episode_rewards)
        stats["eta_seconds"] = max(0, remaining) * self.episode_steps / max(average, 1e-9)
        self._keep_pace(outcome, stats["transitions_per_sec"])
        stats["rss_gb"] = psutil.Process().memory_info().rss / GB
        mean_loss = outcome.mean_loss
        n_envs = len(outcome.episode_rewards)
        start = self.state.episodes_done
        for i in range(n_envs):
            self.state.episodes.append({
                "episode": start + i + 1,
                "reward": float(outcome.episode_rewards[i]),
                "return": float(outcome.final_equity[i] / self.config.initial_balance - 1.0),
                "final_equity": float(outcome.final_equity[i]),
                "epsilon": float(stats["epsilon"]),
                "loss": mean_loss,
                "transitions_per_sec": stats["transitions_per_sec"],
                "performance": _json_safe(stats),
            })
        self.state.episodes_done += n_envs
        mark = self.state.episodes_done // self.config.eval_interval
        finished = self.state.episodes_done >= self.config.episodes
        already = bool(self.state.validation) and self.state.validation[-1]["episode"] == self.state.episodes_done
        if (mark > self.state.last_eval_mark or finished) and not already:
            self.state.last_eval_mark = max(mark, self.state.last_eval_mark)
            self._validate(self.state.episodes_done)
        if self.state.episodes_done % self.config.save_interval == 0:
            self._save(self.output_dir / f"checkpoint_ep{self.state.episodes_done}.pth", include_replay=True)
        latest = self.state.validation[-1]["score"] if self.state.validation else None
        self.monitor.update(self.state.episodes_done, {**stats, "recent_loss": mean_loss,
                                                        "validation_score": latest})

    def _validate_if_due(self, n_envs: int, steps_done: int) -> None:
        """Inside a round: validate at each multiple of ``eval_interval`` episodes' worth of transitions.

        A round steps many accounts at once (all 1000 on a big GPU), so waiting for its end would
        validate far less often than asked; counting transitions keeps the cadence on every machine.
        """
        worth = self.state.episodes_done * self.episode_steps + n_envs * steps_done
        mark = worth // (self.config.eval_interval * self.episode_steps)
        if mark > self.state.last_eval_mark:
            self.state.last_eval_mark = mark
            self._validate(mark * self.config.eval_interval)

    def _validate(self, episode: int) -> None:
        """Score the greedy policy on the validation split (as of ``episode`` episodes); keep the best model."""
        metrics = evaluate_agent(self.agent, self.splits.validation, self.splits.periods_per_year,
                                 self.config).metrics
        score = float(metrics[self.config.validation_metric])
        record = {"episode": episode, "score": score, **metrics}
        self.state.validation.append(record)
        if self.state.best_score is None or score > self.state.best_score:
            self.state.best_score = score
            self.state.best_episode = episode
            # A model, not a resume point: it may be taken mid-round, so it carries no trainer state.
            metadata = {**self.model_metadata(), "episodes_done": episode}
            self.agent.save(self.output_dir / BEST_MODEL, extra_metadata=metadata, include_replay=False)

    # --- checkpoints -------------------------------------------------------------------
    def model_metadata(self) -> dict[str, Any]:
        """What a saved model needs besides weights to be used on fresh data."""
        return {
            **self.metadata,
            "scaler": self.splits.scaler.to_dict(),
            "periods_per_year": self.splits.periods_per_year,
            "timeframe_seconds": self.splits.timeframe.total_seconds(),
            "episodes_done": self.state.episodes_done,
            "validation_metric": self.config.validation_metric,
            "best_score": self.state.best_score,
        }

    def _save(self, path: Path, include_replay: bool) -> None:
        metadata = {**self.model_metadata(), "trainer_state": self.state.to_dict()}
        self.agent.save(path, extra_metadata=metadata, include_replay=include_replay)

    def _resume(self, path: Path) -> tuple[AdaptiveDQNAgent, TrainingState]:
        # Learning settings come from the checkpoint (so the run continues exactly); the machine's
        # own settings from this machine's plan; the episode budget may be raised.
        this_machine = {key: getattr(self.config, key) for key in MACHINE_SETTINGS}
        agent = AdaptiveDQNAgent.from_checkpoint(path, **this_machine, episodes=self.config.episodes)
        trainer_state = agent.checkpoint_metadata.get("trainer_state")
        if trainer_state is None:
            raise CheckpointError(f"{path} holds a model but no training state; resume from a "
                                  "checkpoint_ep*.pth or checkpoint_interrupted.pth file")
        if len(agent.replay) == 0 and agent.steps > 0:
            self.monitor.log(f"[yellow]{path} has no replay memory: resuming with an empty one[/yellow]")
        state = TrainingState.from_dict(trainer_state)
        self.config = agent.config
        self._carry_best_model(path, state)
        return agent, state

    def _carry_best_model(self, checkpoint: Path, state: TrainingState) -> None:
        """Resuming into another folder: bring the run's best model along, or start the choice anew."""
        target = self.output_dir / BEST_MODEL
        source = checkpoint.parent / BEST_MODEL
        if target.exists() or state.best_score is None:
            return
        if source.exists():
            shutil.copy2(source, target)
        else:
            state.best_score = state.best_episode = None
            self.monitor.log(f"[yellow]{source} not found: the best model is chosen again from here on[/yellow]")


def evaluate_agent(agent: AdaptiveDQNAgent, market: MarketSlice, periods_per_year: float,
                   config: TrainingConfig, name: str = "agent"):
    """Backtest the agent's greedy policy on ``market`` with the config's costs."""
    return run_policy(market, agent_policy(agent), name, periods_per_year,
                      initial_balance=config.initial_balance, fee=config.fee, slippage=config.slippage)


def available_memory_gb() -> float:
    """Free RAM this process may still use, in the planner's GB (2**30 bytes), honouring a container's
    cgroup memory limit."""
    from nexlify.hardware.ram import detect_ram

    return float(detect_ram().available_gb)


def _mean_loss(losses: list[torch.Tensor]) -> float | None:
    """Mean of a round's loss tensors, read from the device once."""
    return float(torch.stack(losses).mean()) if losses else None


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in values.items()}
