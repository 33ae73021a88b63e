"""mlobs pipeline SDK: track runs of ML pipeline steps, never blocking and never losing events.

>>> import pipeline_sdk
>>> with pipeline_sdk.run(pipeline="train", step="fit", params={"lr": 0.01}) as run:
...     run.log_metric("loss", 0.25, step=1)
"""

from ._version import __version__
from .client import Client
from .config import SettingError, Settings
from .contract import IODirection, RunStatus
from .logs import RunLogHandler
from .model_api import MLObsMiddleware, ServiceRecorder
from .recorder import RunRecorder
from .run import Run, RunCancelled, current_run, new_run_id, run
from .shipper import ShipperStats
from .transports import FluentTransport, LocalTransport

__all__ = [
    "Client",
    "FluentTransport",
    "IODirection",
    "LocalTransport",
    "MLObsMiddleware",
    "Run",
    "RunCancelled",
    "RunLogHandler",
    "RunRecorder",
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
