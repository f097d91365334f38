"""Metrics, backtests against baselines, and reports."""
