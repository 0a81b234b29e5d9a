"""Adapter: the outbound dispatcher that sends the outbox's rows through a channel."""
