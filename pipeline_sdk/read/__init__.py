"""Reading runs back, from InfluxDB or the local store: :class:`ReadClient` and the ``mlobs`` CLI."""

from .client import LEVELS, RUN_STATUSES, ReadClient, Rows
from .query import AGGREGATIONS, BackendUnavailable, ReadError, RunNotFound

__all__ = [
    "AGGREGATIONS",
    "LEVELS",
    "RUN_STATUSES",
    "BackendUnavailable",
    "ReadClient",
    "ReadError",
    "Rows",
    "RunNotFound",
]
