"""Market data: loading, validation, splits, features and exchange downloads."""
