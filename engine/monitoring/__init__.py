"""Adapter: logs, Prometheus metrics and the stats block."""
