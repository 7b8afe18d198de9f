"""Event-sourced consent management service."""
