"""Benchmarks of cc-executor against websocketd, on loopback.

``python -m stress.bench`` (``make bench``) starts both servers side by side,
runs each workload on both in alternation (A B A B over rounds), prints a
table of medians and ratios, and writes every raw figure to a JSON file under
``bench-results/``. Modules: :mod:`~stress.bench.servers` (the two servers as
child processes, and what ``/proc`` says about them),
:mod:`~stress.bench.workloads` (the clients that drive them),
:mod:`~stress.bench.report` (statistics, the table, the JSON file).
"""
