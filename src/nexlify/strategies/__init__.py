"""Guide-compatible import paths (thin re-exports, no logic)."""
