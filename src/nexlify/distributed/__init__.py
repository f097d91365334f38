"""Walk-forward jobs and sweeps on Ray, across cores, GPUs and machines (``pip install "nexlify[distributed]"``).

``cluster`` joins Ray and runs the planner on each node; ``resources`` says what a trial reserves;
``executor`` runs walk-forward jobs as Ray tasks; ``space`` and ``sweep`` are ``nexlify sweep`` on Ray Tune.
Nothing here imports Ray at import time.
"""
