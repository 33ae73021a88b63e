"""What the demo programs share: argument checks and the run identity's defaults."""

from __future__ import annotations

import argparse
import logging
import os

from pipeline_sdk import contract as c


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is invalid: must be a finite number above 0")
    return value


def identity(pipeline: str, step: str) -> tuple[str, str]:
    """The pipeline and step: the chart's environment (MLOBS_PIPELINE, MLOBS_STEP), else the demo's own."""
    return os.environ.get(c.ENV_PIPELINE) or pipeline, os.environ.get(c.ENV_STEP) or step


def setup_logging() -> None:
    """Log lines on stderr (kubectl logs) too; the SDK also records them while a run is open."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
