"""Use cases and the ports they need. Knows the domain, not the framework or the database."""
