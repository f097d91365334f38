#!/usr/bin/env python3
"""The guide's training script: a thin wrapper around ``nexlify train`` (same flags)."""

import sys
from pathlib import Path

try:
    from nexlify.cli import main
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from nexlify.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
