"""AdaptiveDQNAgent: Double-DQN targets, gradient accumulation, target updates, exploration, learning."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.agent.networks import QNetwork
from nexlify.agent.replay import PrioritizedReplayBuffer
from nexlify.config import STANDALONE_EPSILON_DECAY_STEPS, TrainingConfig


def make_agent(state_size: int = 6, action_size: int = 3, **overrides) -> AdaptiveDQNAgent:
    values = {"model_size": "tiny", "learning_starts": 0, "batch_size": 16, "buffer_size": 1000, "seed": 7}
    values.update(overrides)
    return AdaptiveDQNAgent(state_size, action_size, TrainingConfig().with_overrides(values))


def fill(agent: AdaptiveDQNAgent, n: int = 200, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    s = agent.state_size
    agent.remember_batch(
        rng.standard_normal((n, s)).astype(np.float32),
        rng.integers(agent.action_size, size=n),
        rng.standard_normal(n).astype(np.float32),
        rng.standard_normal((n, s)).astype(np.float32),
        rng.random(n) < 0.1,
    )


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# --- learning step ---------------------------------------------------------------------------
def test_learn_returns_none_until_learning_starts() -> None:
    agent = make_agent(learning_starts=50)
    assert agent.learn() is None
    fill(agent, 49)
    assert agent.learn() is None and agent.updates == 0
    fill(agent, 1)
    loss = agent.learn()
    assert isinstance(loss, float) and np.isfinite(loss) and agent.updates == 1


@pytest.mark.parametrize("prioritized", [False, True])
def test_gradient_accumulation_equals_one_big_batch(prioritized: bool) -> None:
    big = make_agent(batch_size=64, gradient_accumulation_steps=1, prioritized_replay=prioritized)
    acc = make_agent(batch_size=16, gradient_accumulation_steps=4, prioritized_replay=prioritized)
    for agent in (big, acc):
        fill(agent, 300)
    for p_big, p_acc in zip(big.q_network.parameters(), acc.q_network.parameters(), strict=True):
        assert torch.equal(p_big, p_acc)  # same seed -> same start
    # Same indices: both draw batch*accumulation = 64 indices from identically seeded generators.
    assert torch.equal(big.replay.sample_indices(64)[0], acc.replay.sample_indices(64)[0])
    for _ in range(3):
        loss_big, loss_acc = big.learn(), acc.learn()
        assert loss_big == pytest.approx(loss_acc, rel=1e-5, abs=1e-7)
    for p_big, p_acc in zip(big.q_network.parameters(), acc.q_network.parameters(), strict=True):
        torch.testing.assert_close(p_big, p_acc, rtol=1e-5, atol=1e-6)
    if prioritized:
        assert isinstance(acc.replay, PrioritizedReplayBuffer)
        np.testing.assert_allclose(big.replay.tree.leaves(300), acc.replay.tree.leaves(300), rtol=1e-4)


def test_double_dqn_targets_by_hand() -> None:
    agent = make_agent(state_size=2, action_size=2, gamma=0.9)

    def hand_net(head: list[list[float]]) -> QNetwork:
        net = QNetwork(2, 2, (2,))
        with torch.no_grad():
            net.body[0].weight.copy_(torch.eye(2))
            net.body[0].bias.zero_()
            net.head.weight.copy_(torch.tensor(head))
            net.head.bias.zero_()
        return net.eval()

    # s' = [1, 2]: online Q = [1, 2] -> argmax 1; target Q = [6, 1]. Vanilla DQN would use max = 6.
    agent.q_network = hand_net([[1.0, 0.0], [0.0, 1.0]])
    agent.target_network = hand_net([[0.0, 3.0], [1.0, 0.0]])
    next_states = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    targets = agent.compute_td_targets(torch.tensor([0.5, 0.5]), next_states, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(targets, torch.tensor([0.5 + 0.9 * 1.0, 0.5]))
    # n-step horizons: bootstrap with gamma ** horizon.
    agent._gamma_powers = 0.9 ** torch.arange(4, dtype=torch.float32)
    targets = agent.compute_td_targets(
        torch.tensor([0.5, 0.5]), next_states, torch.tensor([0.0, 0.0]), torch.tensor([1, 3])
    )
    torch.testing.assert_close(targets, torch.tensor([0.5 + 0.9, 0.5 + 0.9**3]))


def test_hard_target_update_every_interval_learning_steps() -> None:
    agent = make_agent(target_update="hard", target_update_interval=3, learning_rate=1e-2)
    fill(agent)
    start = params(agent.target_network)
    for _ in range(2):
        agent.learn()
        assert all(torch.equal(a, b) for a, b in zip(start, agent.target_network.parameters(), strict=True))
    agent.learn()
    assert all(
        torch.equal(a, b)
        for a, b in zip(agent.q_network.parameters(), agent.target_network.parameters(), strict=True)
    )
    assert not any(p.requires_grad for p in agent.target_network.parameters())


def test_polyak_target_update_each_learning_step() -> None:
    agent = make_agent(target_update="polyak", tau=0.1, learning_rate=1e-2)
    fill(agent)
    before = params(agent.target_network)
    agent.learn()
    for old, online, new in zip(
        before, agent.q_network.parameters(), agent.target_network.parameters(), strict=True
    ):
        torch.testing.assert_close(new, old + 0.1 * (online.detach() - old))


def test_update_target_model_copies_weights() -> None:
    agent = make_agent(learning_rate=1e-2, target_update_interval=1000)
    fill(agent)
    agent.learn()
    assert not all(
        torch.equal(a, b)
        for a, b in zip(agent.q_network.parameters(), agent.target_network.parameters(), strict=True)
    )
    agent.update_target_model()
    assert all(
        torch.equal(a, b)
        for a, b in zip(agent.q_network.parameters(), agent.target_network.parameters(), strict=True)
    )


# --- exploration -------------------------------------------------------------------------------
def test_epsilon_schedule_is_linear_in_transitions() -> None:
    agent = make_agent(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100)
    assert agent.epsilon == 1.0
    assert agent.decay_epsilon(25) == pytest.approx(0.775)
    assert agent.decay_epsilon(25) == pytest.approx(0.55)
    assert agent.decay_epsilon(50) == pytest.approx(0.1)
    assert agent.decay_epsilon(1000) == pytest.approx(0.1)
    agent.epsilon = 0.0
    assert agent.epsilon == 0.0
    standalone = make_agent(epsilon_decay_steps=None)  # None: the standalone default horizon
    assert standalone.epsilon_at(STANDALONE_EPSILON_DECAY_STEPS // 2) == pytest.approx(
        (standalone.config.epsilon_start + standalone.config.epsilon_end) / 2
    )
    with pytest.raises(ValueError):
        agent.epsilon = 1.5


def test_acting_greedy_random_and_reproducible() -> None:
    agent = make_agent()
    states = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    with torch.no_grad():
        greedy = agent.q_network(torch.from_numpy(states)).argmax(1).numpy()
    np.testing.assert_array_equal(agent.act(states, explore=False), greedy)
    assert [agent.act(s, explore=False) for s in states] == greedy.tolist()
    assert not agent.q_network.training and not agent.target_network.training
    agent.epsilon = 1.0
    random_actions = agent.act(np.zeros((3000, 6), np.float32))
    counts = np.bincount(random_actions, minlength=3)
    assert counts.min() > 900  # uniform over 3 actions
    twin = make_agent()
    twin.epsilon = 1.0
    np.testing.assert_array_equal(twin.act(np.zeros((3000, 6), np.float32)), random_actions)
    agent.epsilon = 0.5
    mixed = agent.act(states)
    assert 0.15 < np.mean(mixed != greedy) < 0.5  # about half random, a third of those agree anyway


# --- hardware knobs ----------------------------------------------------------------------------
def test_num_workers_sets_torch_threads_on_cpu() -> None:
    make_agent(num_workers=1)
    assert torch.get_num_threads() == 1
    make_agent(num_workers=2)
    assert torch.get_num_threads() == 2


def test_agent_runs_numpys_blas_on_one_thread() -> None:
    """Host acting matmuls are tiny: the agent pins numpy's BLAS pool to one thread, whatever it was,
    while torch keeps the planned count."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy reports no BLAS thread pool here")
    limits = threadpool_limits(limits=2, user_api="blas")
    try:
        assert set(blas_threads()) == {2}
        make_agent(num_workers=2)
        assert set(blas_threads()) == {1}
        assert torch.get_num_threads() == 2
    finally:
        limits.restore_original_limits()


def test_bf16_autocast_on_cpu_learns() -> None:
    agent = make_agent(precision="bf16")
    assert agent._amp_dtype == torch.bfloat16 and agent.scaler is None
    fill(agent)
    losses = [agent.learn() for _ in range(5)]
    assert all(np.isfinite(losses))
    assert agent.q_network.body[0].weight.dtype == torch.float32  # master weights stay fp32
    fp16_cpu = make_agent(precision="fp16")
    assert fp16_cpu._amp_dtype is None  # fp16 autocast is CUDA-only: CPU runs fp32


def test_set_batch_size_keeps_effective_batch() -> None:
    agent = make_agent(batch_size=64, gradient_accumulation_steps=1)
    fill(agent)
    agent.set_batch_size(32, 2)
    assert agent.config.effective_batch_size == 64 and agent.config.batch_size == 32
    assert agent.learn() is not None
    with pytest.raises(ValueError):
        agent.set_batch_size(0)


def test_performance_stats() -> None:
    agent = make_agent()
    fill(agent)
    for _ in range(4):
        agent.learn()
    stats = agent.get_performance_stats()
    for key in (
        "avg_batch_time_ms",
        "avg_memory_usage_gb",
        "recent_loss",
        "buffer_size",
        "epsilon",
        "device",
        "updates",
        "samples_per_sec",
        "model_size",
        "parameters",
    ):
        assert key in stats
    assert stats["avg_batch_time_ms"] > 0 and stats["avg_memory_usage_gb"] > 0.01  # RSS on CPU
    assert stats["buffer_size"] == 200 and stats["updates"] == 4 and stats["model_size"] == "tiny"
    assert stats["samples_per_sec"] == pytest.approx(16 * 1000 / stats["avg_batch_time_ms"], rel=1e-6)
    assert stats["device"] == "cpu" and stats["parameters"] == 6 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3


# --- it learns ---------------------------------------------------------------------------------
class Chain:
    """5-state chain: start at 0, action 1 moves right, 0 moves left; reaching state 4 pays +1 and ends.

    Optimal greedy policy: always right. Episodes are truncated after 20 steps.
    """

    n = 5

    def __init__(self) -> None:
        self.pos, self.t = 0, 0

    def obs(self) -> np.ndarray:
        return np.eye(self.n, dtype=np.float32)[self.pos]

    def reset(self) -> np.ndarray:
        self.pos, self.t = 0, 0
        return self.obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        self.t += 1
        terminated = self.pos == self.n - 1
        return self.obs(), float(terminated), terminated, self.t >= 20


def greedy_is_optimal(agent: AdaptiveDQNAgent) -> bool:
    return all(agent.act(np.eye(5, dtype=np.float32)[s], explore=False) == 1 for s in range(4))


@pytest.mark.parametrize("model_size", ["tiny", "small"])
@pytest.mark.parametrize("n_step,prioritized", [(1, False), (3, True)])
def test_agent_learns_the_chain(model_size: str, n_step: int, prioritized: bool) -> None:
    agent = AdaptiveDQNAgent(
        5,
        2,
        TrainingConfig(
            model_size=model_size,
            batch_size=32,
            learning_rate=2e-3,
            gamma=0.9,
            learning_starts=100,
            target_update_interval=50,
            epsilon_decay_steps=1000,
            epsilon_end=0.05,
            buffer_size=5000,
            n_step=n_step,
            prioritized_replay=prioritized,
            seed=3,
            num_workers=1,
        ),
    )
    env = Chain()
    state, started, solved_at = env.reset(), time.perf_counter(), None
    for step in range(1, 4001):
        action = agent.act(state)
        next_state, reward, terminated, truncated = env.step(action)
        agent.remember(state, action, reward, next_state, terminated, truncated)
        agent.decay_epsilon()
        agent.learn()
        state = env.reset() if terminated or truncated else next_state
        if step % 100 == 0 and step > 1000 and greedy_is_optimal(agent):
            solved_at = step
            break
    elapsed = time.perf_counter() - started
    print(
        f"chain {model_size} n_step={n_step} per={prioritized}: solved at {solved_at} steps in {elapsed:.1f}s"
    )
    assert solved_at is not None, "greedy policy never became 'always right'"
    with torch.no_grad():
        q = agent.q_network(torch.eye(5)[:4]).numpy()
    # Q(s, right) approaches gamma^(3-s): the value of reaching the goal.
    np.testing.assert_allclose(q[:, 1], 0.9 ** np.arange(3, -1, -1), atol=0.25)


def test_act_on_tensors_matches_act_on_arrays_and_explores_at_epsilon():
    agent = AdaptiveDQNAgent(12, 3, TrainingConfig(model_size="tiny", seed=3))
    states = np.random.default_rng(0).standard_normal((4_000, 12)).astype(np.float32)
    greedy = agent.act(torch.from_numpy(states), explore=False)
    assert greedy.dtype == torch.int64 and agent.act(states[:3]).dtype == np.int64
    assert isinstance(agent.act(states[0]), int)  # one state, one plain action
    np.testing.assert_array_equal(greedy.numpy(), agent.act(states, explore=False))
    agent.epsilon = 0.5
    explored = agent.act(torch.from_numpy(states), explore=True).numpy()
    changed = np.mean(explored != greedy.numpy())
    # Half the rows act at random; a random action equals the greedy one a third of the time.
    assert changed == pytest.approx(0.5 * 2 / 3, abs=0.03)


def test_optimization_level_has_real_effects():
    from nexlify.agent.dqn import replay_device

    conserve = TrainingConfig(optimization_level="gpu_conserve", device="cuda")
    assert replay_device(conserve, torch.device("cuda")) == torch.device("cpu")  # VRAM keeps only networks
    assert replay_device(TrainingConfig(device="cuda"), torch.device("cuda")) == torch.device("cuda")
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        AdaptiveDQNAgent(12, 3, TrainingConfig(model_size="tiny", optimization_level="balanced"))
        assert torch.get_float32_matmul_precision() == "highest"
        AdaptiveDQNAgent(12, 3, TrainingConfig(model_size="tiny", optimization_level="max_performance"))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_replay_delivers_batches_to_the_output_device():
    from nexlify.agent.replay import ReplayBuffer

    buffer = ReplayBuffer(100, 12, device="cpu", output_device="meta")
    states = np.ones((10, 12), dtype=np.float32)
    buffer.add_batch(states, np.zeros(10), np.zeros(10), states, np.zeros(10))
    batch = buffer.sample(4)
    assert buffer.states.device.type == "cpu" and batch.states.device.type == "meta"


def test_learning_rate_and_gradient_clipping_take_effect() -> None:
    agent = make_agent(learning_rate=1e-2, max_grad_norm=1e-3)
    fill(agent)
    before = params(agent.q_network)
    clipped_norms = []
    real_step = agent.optimizer.step

    def spy_step(*args, **kwargs):
        grads = [p.grad for p in agent.q_network.parameters() if p.grad is not None]
        clipped_norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
        return real_step(*args, **kwargs)

    agent.optimizer.step = spy_step
    agent.learn()
    assert clipped_norms[0] <= 1e-3 * (1 + 1e-4)
    # Adam's first step moves each weight by lr x g/|g| = lr, whatever the clipped gradient's size.
    largest_move = max(float((a - b).abs().max()) for a, b in zip(params(agent.q_network), before, strict=True))
    assert largest_move == pytest.approx(1e-2, rel=1e-3)


# --- weight decay ------------------------------------------------------------------------------
def test_weight_decay_shrinks_weights_by_lr_times_decay() -> None:
    # AdamW: p <- p - lr * wd * p, then the same Adam step as without decay (same gradients from the
    # same weights and batch), so the two agents differ by exactly lr * wd * p0 after one step.
    plain, decayed = make_agent(), make_agent(weight_decay=0.1)
    assert isinstance(decayed.optimizer, torch.optim.AdamW)
    start = params(plain.q_network)
    for agent in (plain, decayed):
        fill(agent)
        agent.learn()
    lr = plain.config.learning_rate
    for p0, a, b in zip(start, plain.q_network.parameters(), decayed.q_network.parameters(), strict=True):
        torch.testing.assert_close(a.detach() - b.detach(), lr * 0.1 * p0, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.1"])
def test_weight_decay_and_feature_set_are_validated(value) -> None:
    from nexlify.errors import ConfigError

    with pytest.raises(ConfigError, match="config key weight_decay must be a finite number in"):
        TrainingConfig(weight_decay=value)
    with pytest.raises(ConfigError, match="config key feature_set must be one of basic, trend"):
        TrainingConfig(feature_set="fancy")
    # Configs saved before these keys existed load with the old behaviour.
    old = {k: v for k, v in TrainingConfig().to_dict().items() if k not in ("weight_decay", "feature_set")}
    assert TrainingConfig.from_dict(old).feature_set == "basic"
    assert TrainingConfig.from_dict(old).weight_decay == 0.0
