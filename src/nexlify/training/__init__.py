"""The training loop, checkpoints and live monitoring."""
