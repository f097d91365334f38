"""The device-resident path on a real CUDA GPU (skipped where there is none, as in CI).

The same code runs on the CPU device in the rest of the suite; these tests check what only a GPU
shows: float64 accounting on the device, each precision's learning step, sampling where the memory
lives, and checkpoints that move between a GPU and a CPU.
"""

import numpy as np
import pytest
import torch

from helpers import random_walk_slice, synthetic_frame, tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.market import prepare_market
from nexlify.env.accounts import Accounts
from nexlify.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# The Gymnasium env's reward, the training default (the differential Sharpe of the costed return), and
# half positions (orders 0-4: the buy-half and sell-half orders move the level by 0.5).
@pytest.mark.parametrize("reward", [{}, {"reward_mode": "differential_sharpe", "trade_penalty": 0.004},
                                    {"reward_mode": "differential_sharpe", "half_orders": True}])
def test_gpu_accounts_match_the_numpy_accounts(reward):
    market = random_walk_slice(80, seed=4)
    orders = 5 if reward.get("half_orders") else 3
    actions = np.random.default_rng(1).integers(0, orders, size=(200, 7))
    host = Accounts(market, 7, **reward)
    gpu = Accounts(market, 7, backend="torch", device="cuda", **reward)
    np.testing.assert_array_equal(host.reset(), gpu.reset().cpu().numpy())
    for t in range(200):
        expected = host.step(actions[t])
        step = gpu.step(torch.as_tensor(actions[t], device="cuda"))
        # Same float64 formulas; the GPU's own log/exp may differ in the last bits.
        np.testing.assert_allclose(expected.info["equity"], step.info["equity"].cpu().numpy(), rtol=1e-12)
        np.testing.assert_allclose(expected.obs, step.obs.cpu().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(expected.reward, step.reward.cpu().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(expected.truncated, step.truncated.cpu().numpy())
        np.testing.assert_array_equal(expected.info["level"], step.info["level"].cpu().numpy())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_learning_step_on_gpu_in_each_precision(precision):
    config = TrainingConfig(device="cuda", model_size="small", batch_size=256, buffer_size=4096,
                            learning_starts=512, precision=precision, use_mixed_precision=precision != "fp32",
                            seed=0)
    agent = AdaptiveDQNAgent(12, 3, config)
    assert agent.replay.states.device.type == "cuda" and agent.replay.generator.device.type == "cuda"
    rng = np.random.default_rng(0)
    states = torch.as_tensor(rng.normal(size=(1024, 12)), dtype=torch.float32, device="cuda")
    actions = torch.as_tensor(rng.integers(0, 3, 1024), device="cuda")
    rewards = torch.as_tensor(rng.normal(size=1024), dtype=torch.float32, device="cuda")
    dones = torch.zeros(1024, dtype=torch.bool, device="cuda")
    agent.remember_batch(states, actions, rewards, states.roll(1, 0), dones)
    before = [p.detach().clone() for p in agent.q_network.parameters()]
    losses = [agent.learn_tensor() for _ in range(20)]
    assert all(loss.device.type == "cuda" for loss in losses)
    assert np.isfinite(torch.stack(losses).cpu().numpy()).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.q_network.parameters(), strict=True))


def test_gpu_training_round_and_checkpoint_resume_on_the_cpu(tmp_path):
    splits = prepare_market(synthetic_frame(420, seed=1), data_days=None)
    trainer = Trainer(tiny_config(episodes=4, device="cuda"), splits, tmp_path / "gpu")
    assert trainer.uses_device_envs
    state = trainer.train()
    assert state.episodes_done == 4 and state.transitions == 4 * trainer.episode_steps
    assert trainer.agent.updates > 0 and all(np.isfinite(e["reward"]) for e in state.episodes)
    # The checkpoint written on the GPU continues on a CPU-only machine.
    resumed = Trainer(tiny_config(episodes=6, device="cpu"), splits, tmp_path / "cpu",
                      resume_from=tmp_path / "gpu" / "checkpoint_ep2.pth")
    assert resumed.agent.device.type == "cpu"
    assert resumed.train().episodes_done == 6
