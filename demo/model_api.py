"""``python -m demo.model_api``: the churn model behind an HTTP API, instrumented by the SDK.

Routes:

* ``POST /predict/{model}`` with a JSON object of the model's features
  (``tenure_months``, ``monthly_charges``, ``support_calls``) answers
  ``{"model", "version", "score", "outcome"}`` and records a ``prediction`` event;
  an unknown model is a 404, a body that is not JSON a 400, a missing or invalid
  feature a 422 naming it; the features of each prediction go into the model's
  serving profile (``log_features``), which a drift monitor compares with the
  training run's baseline;
* ``GET /healthz`` for the readiness probe;
* ``GET /metrics``, served by :class:`pipeline_sdk.MLObsMiddleware`, which also
  records an ``api_request`` event per request (the user from ``x-user-id``, hashed).

The model version comes from ``MODEL_VERSION`` (the chart sets it; default ``1``); the serving
profiles are recorded every ``MLOBS_PROFILE_INTERVAL`` seconds (default 60; the chart's demo sets 10).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pipeline_sdk
from pipeline_sdk import MLObsMiddleware

from ._cli import positive_int, setup_logging
from .data import FEATURES, SERVED, features_of

SERVICE = "churn-api"  # the service name on the model-API dashboard
THRESHOLD = 0.5  # score at or above which the outcome is "churn"

log = logging.getLogger("demo.model_api")


def create_app(client: pipeline_sdk.Client, version: str = "1") -> MLObsMiddleware:
    """The instrumented app; ``client`` is closed (flushed) when the server shuts down."""
    recorder = client.service(SERVICE)

    async def predict(request: Request) -> JSONResponse:
        name = request.path_params["model"]
        model = SERVED.get(name)
        if model is None:
            return JSONResponse({"error": f"model {name!r} is unknown; known: {', '.join(SERVED)}"}, 404)
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"body is not JSON: {exc}"}, 400)
        try:
            features = features_of(payload)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        score = model.score(features)
        outcome = "churn" if score >= THRESHOLD else "stay"
        recorder.log_prediction(name, version=version, score=score, outcome=outcome)
        recorder.log_features(name, version, dict(zip(FEATURES, features, strict=True)))
        return JSONResponse({"model": name, "version": version, "score": round(score, 6), "outcome": outcome})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": list(SERVED)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("%s serving %s (version %s): %s", SERVICE, ", ".join(SERVED), version, client.describe())
        yield
        delivered = client.close()
        log.info("%s stopped; events %s", SERVICE, "delivered" if delivered else "left in the spool")

    routes = [
        Route("/predict/{model}", predict, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return MLObsMiddleware(Starlette(routes=routes, lifespan=lifespan), service=SERVICE, client=client)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.model_api", description=__doc__.splitlines()[0])
    p.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - a container's server listens on its pod's address
        help="address to bind (default 0.0.0.0, every interface; 127.0.0.1 on a laptop)",
    )
    p.add_argument("--port", type=positive_int, default=8000, help="TCP port (default 8000)")
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.port > 65535:
        cli.error(f"--port {args.port} is invalid: must be at most 65535")
    setup_logging()
    import uvicorn  # noqa: PLC0415 - only the server needs it, not create_app's users

    app = create_app(pipeline_sdk.Client(), version=os.environ.get("MODEL_VERSION", "1"))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
