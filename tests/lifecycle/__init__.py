"""Token-lifecycle tests: refresh on demand, across processes, after crashes, and in jobs."""
