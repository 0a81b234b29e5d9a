"""Adapter: durable timers (APScheduler jobs in the database) and who runs them."""
