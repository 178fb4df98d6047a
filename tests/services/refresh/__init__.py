"""Refreshing OAuth tokens (`services/refresh.py`, `services/refresh_timing.py`): on demand in
the proxy path, in background jobs, across workers and processes, and its metrics."""
