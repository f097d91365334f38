"""The walk-forward's defaults, in a leaf module (no torch, no pandas): the CLI builds its parser and
answers ``--help`` or a bad flag without importing the training engine."""

from __future__ import annotations

# Fold windows, in days.
DEFAULT_TEST_DAYS = 90
DEFAULT_TRAIN_DAYS = 365
DEFAULT_VALIDATION_DAYS = 45
# Default training per fold: few episodes over a year-long window (each episode is a pass over it),
# so a walk-forward of the bundled BTC stays practical on a 2-core laptop; see README for timings.
DEFAULT_EPISODES = 12
DEFAULT_SEEDS = 3
# How a walk-forward judges several markets and seeds by default (docs/benchmarks.md has the evidence).
DEFAULT_POOL = True
ENSEMBLE_MODES: tuple[str, ...] = ("mean_q", "vote", "consensus")
DEFAULT_ENSEMBLE = "mean_q"
# Which validated models of each seed the ensemble combines (nexlify.evaluation.snapshots).
DEFAULT_MODEL_CHOICE = "best"
