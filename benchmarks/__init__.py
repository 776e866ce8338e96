"""sgdlab's benchmarks: ``python -m benchmarks`` runs them all (see ``benchmarks/__main__.py``
and docs/benchmarks.md); each ``bench_*.py`` also runs alone. Nothing here is a test."""
