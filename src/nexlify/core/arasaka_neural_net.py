"""The guide's live-trading import path: ``ArasakaNeuralNetwork`` is ``nexlify.live.LiveTrader``."""

from nexlify.live import LiveTrader as ArasakaNeuralNetwork
from nexlify.live import build_state

__all__ = ["ArasakaNeuralNetwork", "build_state"]
