"""Running a trained model on a market: paper (default) or live sessions, their journal and report.

``feeds`` turns an exchange (or a replayed file) into closed candles, ``session`` is the candle loop,
``broker`` fills orders (on paper with the backtest's costs, or on the exchange), ``journal`` keeps
everything in one SQLite file, and ``report`` reads a journal back into metrics and a chart.
"""
