"""Adapter: the `tertulia` command line."""
