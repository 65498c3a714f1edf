"""Developer tooling: the measurements behind docs/performance.md (`python -m bench perf`)."""
