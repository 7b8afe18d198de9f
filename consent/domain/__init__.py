"""The pure domain: catalog, subject consents, events and decisions. No I/O here."""
