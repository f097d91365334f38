"""``create_optimized_agent``: an agent configured by the hardware plan, with validated overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.features import STATE_SIZE
from nexlify.env.actions import N_ACTIONS


def create_optimized_agent(
    state_size: int = STATE_SIZE,
    action_size: int = N_ACTIONS,
    auto_detect: bool = True,
    config_override: Mapping[str, Any] | None = None,
) -> AdaptiveDQNAgent:
    """Build an ``AdaptiveDQNAgent`` from this machine's plan (or the defaults when ``auto_detect`` is
    False), with ``config_override`` applied; unknown keys or invalid values raise ``ConfigError``."""
    if auto_detect:
        from nexlify.hardware.profiler import HardwareProfiler

        base = HardwareProfiler().config
    else:
        base = TrainingConfig()
    return AdaptiveDQNAgent(state_size, action_size, base.with_overrides(config_override))
