"""The version of the mlobs SDK (the one place it is written)."""

__version__ = "0.1.0"
