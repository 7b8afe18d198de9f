"""Adapters: the database, the event bus, the outside world."""
