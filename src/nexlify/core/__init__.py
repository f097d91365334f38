"""Guide-compatible import paths for live use (thin re-exports, no logic)."""
