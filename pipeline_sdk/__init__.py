"""mlobs pipeline SDK: track runs of ML pipeline steps, never blocking and never losing events.

>>> import pipeline_sdk
>>> with pipeline_sdk.run(pipeline="train", step="fit", params={"lr": 0.01}) as run:
...     run.log_metric("loss", 0.25, step=1)
"""

from ._version import __version__
from .client import Client
from .config import SettingError, Settings
from .contract import IODirection, RunStatus
from .deprecated import module_getattr as _module_getattr
from .logs import RunLogHandler
from .middleware import MLObsMiddleware
from .naming import new_run_id
from .outcome import RunCancelled
from .recorder import ActiveRun
from .run import RunContext, current_run, run
from .service import ServiceRecorder
from .stats import ShipperStats
from .transports import FluentTransport, LocalTransport

__all__ = [
    "ActiveRun",
    "Client",
    "FluentTransport",
    "IODirection",
    "LocalTransport",
    "MLObsMiddleware",
    "RunCancelled",
    "RunContext",
    "RunLogHandler",
    "RunStatus",
    "ServiceRecorder",
    "SettingError",
    "Settings",
    "ShipperStats",
    "__version__",
    "current_run",
    "new_run_id",
    "run",
]

# The old names, for one release: each use warns (DeprecationWarning) and gives the new class.
__getattr__ = _module_getattr(__name__, {"Run": "RunContext", "RunRecorder": "ActiveRun"}, globals())
