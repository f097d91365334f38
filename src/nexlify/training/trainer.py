"""The training loop: N accounts -> replay -> DQN updates, with validation and checkpoints.

Work is counted in episodes: one episode is one pass of one account over the training split, so the
workload (episodes x window) is the same on every machine. Episodes run in rounds of
``parallel_envs`` accounts stepped together (fewer in the last round when fewer remain), as numpy
arrays on the host or as torch tensors on the training device (``env_backend``): one loop, the same
trading step (``nexlify.env.accounts``) and the same acting call (``agent.act``) on both.

Cadence is counted in transitions, so a GPU stepping 1000 accounts in one round keeps the same
cadence as a laptop stepping 4: each time the transitions collected reach another ``eval_interval``
episodes' worth the greedy policy is scored on the validation split (``best_model.pth`` is the best
by that score, never by a training episode), and each time they reach another ``save_interval``
episodes' worth ``checkpoint_ep{N}.pth`` is written. A checkpoint holds the round in progress too
(the accounts' state and what the round has earned so far), so ``--resume`` from any checkpoint,
including the one written on Ctrl-C or SIGTERM, continues exactly as if the run had never stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import MACHINE_SETTINGS, TrainingConfig
from nexlify.data.features import ACCOUNT_FEATURE_NAMES
from nexlify.data.market import MarketSlice, MarketSplits
from nexlify.env.accounts import Accounts, AccountStep
from nexlify.env.actions import n_actions, to_orders
from nexlify.errors import CheckpointError, ConfigError
from nexlify.evaluation.backtest import agent_policy, run_policy
from nexlify.evaluation.snapshots import episode_label, exact_interval, validated_model_file
from nexlify.hardware.cpu import detect_cpu, thread_candidates
from nexlify.hardware.units import GB
from nexlify.training.monitor import TrainingMonitor

BEST_MODEL = "best_model.pth"
FINAL_MODEL = "final_model.pth"
INTERRUPTED_CHECKPOINT = "checkpoint_interrupted.pth"
MEMORY_CHECK_EVERY_STEPS = 256
# A round under this share of the profiler's projected speed times the other torch thread counts.
SLOW_PACE_FRACTION = 0.75
STOP_SIGNALS = ("SIGINT", "SIGTERM")


def is_out_of_memory(error: BaseException) -> bool:
    """True for the out-of-memory errors of CUDA, ROCm (same class) and MPS."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def accounts_per_round(config: TrainingConfig) -> int:
    """How many accounts a round steps together: ``parallel_envs``, never more than the episodes."""
    return min(config.parallel_envs, config.episodes)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after saving ``checkpoint`` to resume from."""

    def __init__(self, signal_name: str, checkpoint: Path) -> None:
        super().__init__(f"{signal_name}: saved {checkpoint}; continue with --resume {checkpoint}")
        self.signal_name, self.checkpoint = signal_name, checkpoint


class StopRequest:
    """Turns SIGINT and SIGTERM into a request the loop honours at the end of its current step.

    Installed only in the main thread (Python delivers signals there). A second signal of either
    kind stops at once, without a checkpoint.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        self.signal_name = None  # a new session of the loop: an earlier stop is done with
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        numbers = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
        previous = {number: signal.getsignal(number) for number in numbers}
        for number in numbers:
            signal.signal(number, self._handle)
        # A process may hold the stop signals blocked until its loop can honour them (a run side by
        # side, ``worker_pool``): unblocked now, one that arrived meanwhile stops this loop.
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, numbers) if hasattr(signal, "pthread_sigmask") else None
        try:
            yield self
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # blocked again before the old handlers
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number: int, _frame: Any) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"{signal.Signals(number).name} again: stopped without a checkpoint")
        self.signal_name = signal.Signals(number).name


class _Round:
    """The round in progress: its accounts, and what each account's first episode has earned so far.

    A round always runs its window to the end: an account ruined on the way gets a fresh balance where
    it stands and keeps collecting transitions (``Accounts.step``), so a round is exactly
    ``n_envs x episode_steps`` transitions, as the exploration schedule and the projection assume.
    Only the account's first life counts for the round's records.
    """

    def __init__(self, accounts: Accounts, episode_steps: int) -> None:
        self.accounts = accounts
        self.n_envs = accounts.num_envs
        self.episode_steps = episode_steps
        self.step = 0
        self.obs = accounts.reset()
        xp = accounts.xp
        self.first_episode = xp.fill(self.n_envs, True, "bool")
        self.episode_reward = xp.fill(self.n_envs, 0.0, "float64")
        self.final_equity = xp.fill(self.n_envs, accounts.initial_balance, "float64")
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.loss_count = 0
        self.seconds = 0.0

    @property
    def over(self) -> bool:
        return self.step >= self.episode_steps

    def record(self, result: AccountStep) -> None:
        """Add a step's rewards and episode ends to each account's first episode."""
        where = self.accounts.xp.where
        reward = result.reward.double() if isinstance(result.reward, torch.Tensor) else result.reward
        self.episode_reward = self.episode_reward + where(self.first_episode, reward, 0.0)
        self.final_equity = where(self.first_episode & result.done, result.info["equity"], self.final_equity)
        self.first_episode = self.first_episode & ~result.done
        self.obs = result.obs
        self.step += 1

    def add_loss(self, loss: torch.Tensor) -> None:
        if self.loss_sum.device != loss.device:
            self.loss_sum = self.loss_sum.to(loss.device)
        self.loss_sum += loss.double()  # stays on the device: no per-step sync
        self.loss_count += 1

    def mean_loss(self) -> float | None:
        return float(self.loss_sum) / self.loss_count if self.loss_count else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe progress, for a checkpoint taken mid-round."""
        to_list = self.accounts.xp.to_list
        return {"n_envs": self.n_envs, "step": self.step,
                "accounts": self.accounts.state_dict(), "first_episode": to_list(self.first_episode),
                "episode_reward": to_list(self.episode_reward), "final_equity": to_list(self.final_equity),
                "loss_sum": float(self.loss_sum), "loss_count": self.loss_count, "seconds": self.seconds}

    def load_dict(self, values: dict[str, Any]) -> None:
        """Continue from ``to_dict`` output."""
        vector = self.accounts.xp.vector
        self.accounts.load_state_dict(values["accounts"])
        self.obs = self.accounts.observe()
        self.step = int(values["step"])
        self.first_episode = vector(values["first_episode"], "bool")
        self.episode_reward = vector(values["episode_reward"], "float64")
        self.final_equity = vector(values["final_equity"], "float64")
        self.loss_sum = torch.tensor(float(values["loss_sum"]), dtype=torch.float64)
        self.loss_count, self.seconds = int(values["loss_count"]), float(values["seconds"])


@dataclass
class TrainingState:
    """Everything the loop needs to continue exactly where a checkpoint left off (JSON-safe)."""

    episodes_done: int = 0
    transitions: int = 0
    learn_credit: float = 0.0
    best_score: float | None = None
    best_episode: int | float | None = None
    last_eval_mark: int = 0
    last_save_mark: int = 0
    replay_frozen: bool = False
    train_seconds: float = 0.0
    # Of train_seconds: the validations (backtests and best-model files) and the checkpoint_ep files,
    # to set beside the profiler's projection of each.
    validation_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    episodes: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    round: dict[str, Any] | None = None  # the round in progress (``_Round.to_dict``), between steps

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
        on_validation: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.splits = splits
        # Told every validation record (episode, score, metrics): walk-forward and Tune report from it.
        self.on_validation = on_validation
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.monitor = monitor or TrainingMonitor(config.episodes, quiet=True)
        window_steps = len(splits.train) - 1
        if config.episode_bars is not None and config.episode_bars > window_steps:
            raise ConfigError(f"config key episode_bars ({config.episode_bars}) is longer than the training "
                              f"window ({window_steps} steps); use at most {window_steps} or more data")
        # Random windows (episode_bars) make episodes shorter: the workload is episodes x this.
        self.episode_steps = config.episode_bars or window_steps
        self.metadata = dict(metadata or {})
        total = config.episodes * self.episode_steps
        if config.epsilon_decay_steps is None:
            # Exploration decays by transitions over a fixed fraction of the whole workload.
            config = config.with_overrides(
                {"epsilon_decay_steps": max(1, int(config.exploration_fraction * total))}
            )
        if accounts_per_round(config) != config.parallel_envs:  # record the count that runs
            config = config.with_overrides({"parallel_envs": accounts_per_round(config)})
        self.config = config
        self.stop_request = StopRequest()
        if resume_from is not None:
            self.agent, self.state = self._resume(Path(resume_from))
        else:
            self.agent = AdaptiveDQNAgent(self.market_state_size, n_actions(config.action_mode), config)
            self.state = TrainingState()
        # The profiler's measured speed for this setting (transitions/s); None: nothing to compare with.
        self.expected_transitions_per_s: float | None = None
        # Times the loop at this run's setting for given thread counts in seconds ({threads: transitions/s});
        # set by the pipeline (hardware.measure.time_thread_counts). Without it a slow run times whole rounds.
        self.thread_probe: Callable[[TrainingConfig, list[int]], dict[int, float]] | None = None
        self._thread_trial: dict[int, float] | None = None  # rates per thread count once a round ran slow
        self._pace_settled = False
        self._round: _Round | None = None
        if self.state.round is not None:
            self._round = self._new_round(int(self.state.round["n_envs"]))
            self._round.load_dict(self.state.round)

    @property
    def uses_device_envs(self) -> bool:
        """True when the environments run as torch tensors on the training device."""
        backend = self.config.env_backend
        return backend == "torch" or (backend == "auto" and self.agent.device.type != "cpu")

    @property
    def market_state_size(self) -> int:
        return self.splits.train.features.shape[1] + len(ACCOUNT_FEATURE_NAMES)

    # --- the loop ----------------------------------------------------------------------
    def train(self) -> TrainingState:
        """Run until ``config.episodes`` episodes are complete, then save the final (and, if no validation
        ran, the best) model.

        SIGINT (Ctrl-C) and SIGTERM stop at the end of the current step: the loop saves
        ``checkpoint_interrupted.pth`` and raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``).
        A second signal stops at once, without a checkpoint.
        """
        with self.stop_request.installed():
            completed = self.run()
        if not completed:
            path = self.output_dir / INTERRUPTED_CHECKPOINT
            self._save(path, include_replay=True)
            interrupted = TrainingInterrupted(self.stop_request.signal_name or "stop", path)
            self.monitor.log(f"interrupted by {interrupted}")
            raise interrupted
        self._save(self.output_dir / FINAL_MODEL, include_replay=False)
        if self.state.best_score is None:
            # No validation ran (tiny runs): the final model is the only candidate.
            self._save(self.output_dir / BEST_MODEL, include_replay=False)
        return self.state

    def run(self, max_transitions: int | None = None) -> bool:
        """Step the loop: act, trade, store, learn; validate and save as due.

        Returns True once all episodes are done; False when it stopped early, after
        ``max_transitions`` more transitions (at the end of a step; the round in progress is kept, so
        the next call continues it) or on a stop request. Saves no final model (see ``train``): a
        short ``run`` is a measurement of the real loop.
        """
        stop_at = None if max_transitions is None else self.state.transitions + max_transitions
        while self.state.episodes_done < self.config.episodes:
            if self._round is None:
                remaining = self.config.episodes - self.state.episodes_done
                self._round = self._new_round(min(self.config.parallel_envs, remaining))
            self._step_round(self._round, stop_at)
            if not self._round.over:
                return False
            started = time.perf_counter()
            self._finish_round(self._round)  # its validation and checkpoint, when due, are training time too
            self.state.train_seconds += time.perf_counter() - started
            self._round = None
            budget_spent = stop_at is not None and self.state.transitions >= stop_at
            if self.stop_request.signal_name is not None or budget_spent:
                return self.state.episodes_done >= self.config.episodes
        return True

    def run_round(self, n_envs: int) -> None:
        """A fresh round of ``n_envs`` accounts through ``episode_steps`` steps of the loop (acting,
        trading, storing, learning as due), its episodes not recorded: what the hardware profiler
        times in its bursts."""
        self._step_round(self._new_round(n_envs), None)

    def _new_round(self, n_envs: int) -> _Round:
        cfg = self.config
        backend = "torch" if self.uses_device_envs else "numpy"
        accounts = Accounts(self.splits.train, n_envs, initial_balance=cfg.initial_balance, fee=cfg.fee,
                            slippage=cfg.slippage, reward_mode=cfg.reward_mode, backend=backend,
                            device=self.agent.device if backend == "torch" else None,
                            episode_bars=cfg.episode_bars, trade_penalty=cfg.trade_penalty,
                            risk_aversion=cfg.risk_aversion, dsr_eta=cfg.dsr_eta,
                            half_orders=cfg.action_mode == "target_half",
                            staggered=cfg.episode_start == "staggered",
                            # Fixed by the seed and the round (its first episode), so a resumed round
                            # replays the same windows.
                            window_seed=cfg.seed * 65_537 + self.state.episodes_done)
        return _Round(accounts, self.episode_steps)

    def _step_round(self, rnd: _Round, stop_at: int | None) -> None:
        """Step every account of ``rnd`` until the round is over, ``stop_at`` transitions are stored, or
        a stop is requested. Each step: act on all accounts, trade, store the transitions, learn as due,
        then validate and save when another interval's worth of transitions is complete."""
        agent, n = self.agent, rnd.n_envs
        started = time.perf_counter()
        while not rnd.over:
            obs = rnd.obs
            actions = agent.act(obs, explore=True)
            orders = to_orders(actions, rnd.accounts.level, self.config.action_mode, rnd.accounts.xp.where)
            result = rnd.accounts.step(orders)
            # The real next state, not the first state of the next episode: n-step windows are kept
            # per account row, and an account's episode end is a terminal or truncated transition.
            agent.remember_batch(obs, actions, result.reward, result.final_obs, result.terminated,
                                 truncated=result.truncated)
            rnd.record(result)
            self.state.transitions += n
            self._learn_as_due(n, rnd.step - 1, rnd)
            if not rnd.over:
                self._validate_and_save_as_due(self.state.episodes_done * self.episode_steps + n * rnd.step)
            if self.stop_request.signal_name is not None or (stop_at is not None and
                                                             self.state.transitions >= stop_at):
                break
        seconds = time.perf_counter() - started
        rnd.seconds += seconds
        self.state.train_seconds += seconds

    def _learn_as_due(self, new_transitions: int, step: int, rnd: _Round) -> None:
        """After storing ``new_transitions``: decay exploration, take the learning steps now due
        (one per ``train_frequency`` transitions), and now and then check host memory."""
        self.agent.decay_epsilon(new_transitions)
        self.state.learn_credit += new_transitions
        while self.state.learn_credit >= self.config.train_frequency:
            self.state.learn_credit -= self.config.train_frequency
            loss = self._learn()
            if loss is not None:
                rnd.add_loss(loss)
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

    def _keep_pace(self, rnd: _Round, rate: float) -> None:
        """The first round that learned throughout: if it ran well below the profiler's projection,
        time the next rounds at the other torch thread counts and keep the fastest (an adaptation
        event). On a loaded machine more threads can run the loop several times slower, which only
        the real loop shows, and the load may have changed since the profile was measured."""
        expected = self.expected_transitions_per_s
        if self._pace_settled or expected is None:
            return
        if self._thread_trial is None:
            if self.state.transitions - rnd.n_envs * rnd.step < self.config.learning_starts:
                return  # part of this round only collected: faster than the run will be
            if rate >= SLOW_PACE_FRACTION * expected:
                self._pace_settled = True
                return
            self._thread_trial = {}
            how = "timing the loop" if self.thread_probe else "timing the next rounds"
            self._event("slow_pace", f"{rate:,.0f} transitions/s, {rate / expected:.0%} of the projected "
                        f"{expected:,.0f}: {how} at each torch thread count")
            if self.thread_probe is not None:
                self._thread_trial = self.thread_probe(self.config, thread_candidates(detect_cpu().compute_cores))
                self._pace_settled = True
                self._adopt_fastest_threads()
                return
        self._thread_trial[self.config.num_workers] = rate
        untried = [n for n in thread_candidates(detect_cpu().compute_cores) if n not in self._thread_trial]
        if untried and self.state.episodes_done + rnd.n_envs < self.config.episodes:
            self._set_threads(untried[0])
            return
        self._pace_settled = True
        self._adopt_fastest_threads()

    def _adopt_fastest_threads(self) -> None:
        trial = self._thread_trial or {}
        best = max(trial, key=lambda n: (trial[n], -n))
        self._set_threads(best)
        rates = ", ".join(f"{n}: {r:,.0f}" for n, r in sorted(trial.items()))
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

    def _finish_round(self, rnd: _Round) -> None:
        """Record the round's episodes, validate and save as due, and update the display."""
        stats = self.agent.get_performance_stats()
        stats["transitions_per_sec"] = rnd.n_envs * rnd.step / max(rnd.seconds, 1e-9)
        average = self.state.transitions / max(self.state.train_seconds, 1e-9)
        remaining = self.config.episodes - self.state.episodes_done - rnd.n_envs
        stats["eta_seconds"] = max(0, remaining) * self.episode_steps / max(average, 1e-9)
        self._keep_pace(rnd, stats["transitions_per_sec"])
        stats["rss_gb"] = psutil.Process().memory_info().rss / GB
        mean_loss = rnd.mean_loss()
        rewards, final_equity = (np.asarray(rnd.accounts.xp.to_list(values))
                                 for values in (rnd.episode_reward, rnd.final_equity))
        start = self.state.episodes_done
        for i in range(rnd.n_envs):
            self.state.episodes.append({
                "episode": start + i + 1,
                "reward": float(rewards[i]),
                "return": float(final_equity[i] / self.config.initial_balance - 1.0),
                "final_equity": float(final_equity[i]),
                "epsilon": float(stats["epsilon"]),
                "loss": mean_loss,
                "transitions_per_sec": stats["transitions_per_sec"],
                "performance": _json_safe(stats),
            })
        self.state.episodes_done += rnd.n_envs
        self._validate_and_save_as_due(self.state.episodes_done * self.episode_steps, round_over=True)
        latest = self.state.validation[-1]["score"] if self.state.validation else None
        self.monitor.update(self.state.episodes_done, {**stats, "recent_loss": mean_loss,
                                                        "validation_score": latest})

    def _validate_and_save_as_due(self, worth: int, round_over: bool = False) -> None:
        """Validate at each multiple of ``eval_interval`` and write ``checkpoint_ep{N}.pth`` at each multiple
        of ``save_interval`` episodes' worth of transitions (``worth`` = episodes x steps so far).

        Counting transitions keeps the cadence when a round steps many accounts at once (all 1000 on a
        big GPU). The last round also validates where the run ends, if that is not a multiple.
        """
        cfg, state = self.config, self.state
        # Exact arithmetic: a float product could miss a mark of 0.5 (or 1/3) episode by one transition.
        interval = exact_interval(cfg.eval_interval)
        mark = worth * interval.denominator // (interval.numerator * self.episode_steps)
        if mark > state.last_eval_mark:
            state.last_eval_mark = mark
            self._validate(episode_label(mark * interval))
        finished = round_over and state.episodes_done >= cfg.episodes
        if finished and not (state.validation and state.validation[-1]["episode"] == state.episodes_done):
            self._validate(state.episodes_done)
        mark = worth // (cfg.save_interval * self.episode_steps)
        if mark > state.last_save_mark:
            state.last_save_mark = mark
            started = time.perf_counter()
            self._save(self.output_dir / f"checkpoint_ep{mark * cfg.save_interval}.pth", include_replay=True)
            state.checkpoint_seconds += time.perf_counter() - started

    def _validate(self, episode: int | float) -> None:
        """Score the greedy policy on the validation split (as of ``episode`` episodes); keep the best model."""
        started = time.perf_counter()
        metrics = evaluate_agent(self.agent, self.splits.validation, self.splits.periods_per_year,
                                 self.config).metrics
        score = float(metrics[self.config.validation_metric])
        record = {"episode": episode, "score": score, **metrics}
        self.state.validation.append(record)
        if self.on_validation is not None:
            self.on_validation(record)
        # A model, not a resume point: it may be taken mid-round, so it carries no trainer state.
        metadata = {**self.model_metadata(), "episodes_done": episode, "validation_score": score}
        if self.config.keep_validated_models:
            self.agent.save(self.output_dir / validated_model_file(episode), extra_metadata=metadata,
                            include_replay=False)
        if self.state.best_score is None or score > self.state.best_score:
            self.state.best_score = score
            self.state.best_episode = episode
            self.agent.save(self.output_dir / BEST_MODEL, extra_metadata=metadata, include_replay=False)
        self.state.validation_seconds += time.perf_counter() - started

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
        self.state.round = None if self._round is None or self._round.over else self._round.to_dict()
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
        if "last_save_mark" not in trainer_state:  # written before checkpoints were counted in transitions
            state.last_save_mark = state.episodes_done // agent.config.save_interval
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


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in values.items()}
