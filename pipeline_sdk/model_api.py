"""The model API's instrumentation under its first module name, kept for code that imports it.

:class:`ServiceRecorder` (a service's request and prediction events) lives in
:mod:`pipeline_sdk.service`; :class:`MLObsMiddleware` (the ASGI middleware and ``/metrics``) in
:mod:`pipeline_sdk.middleware`, with its route matching in :mod:`pipeline_sdk.routes` and its
metrics in :mod:`pipeline_sdk.http_metrics`.  Both are also ``pipeline_sdk.ServiceRecorder`` and
``pipeline_sdk.MLObsMiddleware``.
"""

from __future__ import annotations

from .http_metrics import STATUS_CLASSES
from .middleware import OTHER_METHOD, MLObsMiddleware
from .routes import HTTP_METHODS
from .service import USER_HASH_HEX, USER_HASH_KEY_MIN, ServiceRecorder, status_class

__all__ = [
    "HTTP_METHODS",
    "OTHER_METHOD",
    "STATUS_CLASSES",
    "USER_HASH_HEX",
    "USER_HASH_KEY_MIN",
    "MLObsMiddleware",
    "ServiceRecorder",
    "status_class",
]
