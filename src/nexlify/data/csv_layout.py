"""How a candle CSV is laid out: which line holds the header, which character separates the fields,
and the per-cell fixes some exporters need.

Candle files come from many exporters, and a market Nexlify has never seen usually comes in one of
their layouts:

* CryptoDataDownload writes a URL line above the header, newest candles first, a ``unix`` column
  beside a ``date`` column, and its volumes as ``Volume BTC`` / ``Volume USDT``;
* European spreadsheets separate fields with ``;`` and write decimal commas (``101,5``);
* MetaTrader writes tab-separated ``<DATE>`` and ``<TIME>`` columns (``2024.01.31`` and ``13:00``).

``sniff_layout`` finds the header and separator from the file's first non-blank lines; the loader
(``nexlify.data.market``) then reads the file with pandas and applies ``decimal_points`` and
``joined_date_and_time`` before its own validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

SEPARATORS: tuple[str, ...] = (",", ";", "\t", "|")
# Non-blank lines above the header that may be a banner (a URL, a title). More than this and the
# file is not a candle CSV with a header.
MAX_BANNER_LINES = 5
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
_DOTTED_DATE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})")


@dataclass(frozen=True)
class CsvLayout:
    """Where a CSV's data starts and how its fields are separated."""

    separator: str
    skip_lines: int  # physical lines above the header (or above the first row of a headerless file)
    has_header: bool

    @property
    def first_data_line(self) -> int:
        """The 1-based file line of the first candle row (what error messages count from)."""
        return self.skip_lines + (2 if self.has_header else 1)


def column_key(name: object) -> str:
    """A column name as the loader matches it: trimmed, unquoted, without MetaTrader's angle
    brackets, lower case."""
    return str(name).strip().strip('"').strip("'").strip("<>").strip().lower()


def separator_of(line: str) -> str:
    """The separator a line uses most (ties go to the earlier of ``SEPARATORS``); ``,`` if none."""
    counts = [(line.count(sep), -order, sep) for order, sep in enumerate(SEPARATORS)]
    best = max(counts)
    return best[2] if best[0] else ","


def sniff_layout(lines: Iterable[tuple[int, str]], known_names: frozenset[str]) -> CsvLayout:
    """The layout of a file from its first non-blank ``(line_number, text)`` pairs (1-based).

    The header is the first of the first ``MAX_BANNER_LINES + 1`` lines that names a known column;
    lines above it are a banner and are skipped. Without such a line the file is headerless and its
    rows start at the first non-blank line.
    """
    lines = list(lines)
    if not lines:
        return CsvLayout(",", 0, False)
    for number, text in lines[: MAX_BANNER_LINES + 1]:
        separator = separator_of(text)
        if any(column_key(field) in known_names for field in text.split(separator)):
            return CsvLayout(separator, number - 1, True)
    number, text = lines[0]
    return CsvLayout(separator_of(text), number - 1, False)


def decimal_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells written with a decimal comma (``101,5``, no point) rewritten with a point.

    Only for files not separated by commas, where a comma inside a field can only be a decimal
    comma; a cell with both a comma and a point is left for validation to quote and refuse.
    """
    fixed = {}
    for name in frame.columns:
        cells = frame[name].astype(str)
        comma_only = cells.str.contains(",", regex=False) & ~cells.str.contains(".", regex=False)
        fixed[name] = cells.where(~comma_only, cells.str.replace(",", ".", regex=False))
    return pd.DataFrame(fixed, index=frame.index)


def joined_date_and_time(date: pd.Series, time: pd.Series) -> pd.Series | None:
    """One timestamp column from a date column and a clock-time column (MetaTrader's ``<DATE>`` and
    ``<TIME>``), with dotted dates (``2024.01.31``) written as ISO dates; ``None`` when ``time`` does
    not hold clock times (then it is not the other half of the timestamp)."""
    clock = time.astype(str).str.strip()
    if clock.empty or not clock.str.match(_CLOCK).all():
        return None
    day = date.astype(str).str.strip().str.replace(_DOTTED_DATE, r"\1-\2-\3", regex=True)
    return day + " " + clock
