"""Atomic file writes (a crash mid-write leaves the previous file intact), Nexlify's cache folder,
and the check every command makes of the files it is given to read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nexlify.errors import ConfigError


def check_input_file(flag: str, path: str | Path) -> Path:
    """``path`` if it is an existing regular file, else ConfigError naming ``flag``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{flag} file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{flag} {path} is not a file; give the path of a file")
    return path


def check_model_files(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """``--model`` files: each an existing file, and no file twice (an ensemble needs different models)."""
    models = [check_input_file("--model", path) for path in paths]
    if len({path.resolve() for path in models}) != len(models):
        raise ConfigError("--model names the same file twice; an ensemble needs different models")
    return models


def default_cache_dir() -> Path:
    """``$NEXLIFY_CACHE_DIR`` when set, else ``~/.cache/nexlify`` (profiles, downloaded candles)."""
    env = os.environ.get("NEXLIFY_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nexlify"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
