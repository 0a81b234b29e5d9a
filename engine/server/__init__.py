"""Adapter: the ASGI app, the single writer thread, and the worker process that runs them."""
