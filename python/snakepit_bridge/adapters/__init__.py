"""Sample adapters."""
