"""The errors every layer shares: a bad config value, and one item that cannot go through a stage."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range (the message names it)."""


class ItemError(Exception):
    """One item cannot go through a stage; it becomes an error row with this type and message."""

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class StageInputError(KeyError):
    """A batch lacks columns a stage needs (the message names them)."""
