"""The guide's import path for the trading environment (re-exports only)."""

from nexlify.env.trading import TradingEnvironment
from nexlify.env.vector import VectorTradingEnv

__all__ = ["TradingEnvironment", "VectorTradingEnv"]
