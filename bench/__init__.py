"""Benchmarks. Each script writes its own section of docs/benchmarks.md via bench.report."""
