"""Nexlify: an adaptive deep-RL trading agent that plans itself for the machine it runs on."""

__version__ = "0.1.0"
