"""The guide's import path for the adaptive agent (re-exports only)."""

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.agent.factory import create_optimized_agent
from nexlify.config import MODEL_WIDTHS, TrainingConfig
from nexlify.hardware.profiler import HardwareProfiler

__all__ = ["AdaptiveDQNAgent", "HardwareProfiler", "MODEL_WIDTHS", "TrainingConfig", "create_optimized_agent"]
