"""Podium's benchmarks. `make bench` runs `python -m bench.refund`; see `bench/README.md`."""
