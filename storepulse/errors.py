"""The one root exception of storepulse, and its few kinds.

Messages say what failed, where, and what to do about it.
"""


class StorepulseError(Exception):
    """Root of every error storepulse raises on purpose."""


class ConfigError(StorepulseError):
    """A setting is missing or malformed; the message names the variable or flag."""


class CatalogError(StorepulseError):
    """The catalog file or the catalog in Redis is invalid."""


class BackendUnavailable(StorepulseError):
    """Kafka, Redis or another server could not be reached at start."""
