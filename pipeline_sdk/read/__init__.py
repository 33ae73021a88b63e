"""Reading runs back, from InfluxDB or the local store: :class:`ReadClient` and the ``mlobs`` CLI."""

from ..artifacts import ArtifactCorrupt, NotStored  # what restore_artifact raises
from .client import LEVELS, ReadClient
from .profiles import ProfileNotFound
from .query import AGGREGATIONS, BackendUnavailable, ReadError, RunNotFound
from .resources import ArtifactNotFound
from .rows import Rows
from .services import ServiceNotFound
from .steps import ALL_ATTEMPTS, RUN_STATUSES, AmbiguousRun

__all__ = [
    "AGGREGATIONS",
    "ALL_ATTEMPTS",
    "LEVELS",
    "RUN_STATUSES",
    "AmbiguousRun",
    "ArtifactCorrupt",
    "ArtifactNotFound",
    "BackendUnavailable",
    "NotStored",
    "ProfileNotFound",
    "ReadClient",
    "ReadError",
    "Rows",
    "RunNotFound",
    "ServiceNotFound",
]
