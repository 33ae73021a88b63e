"""``python -m demo.train``: train the churn model as one tracked pipeline step.

It records what Craft AI's and omega-ml's run tracking show: the parameters, the
input dataset and its source, loss and accuracy per epoch (list metrics), the final
accuracy and loss (simple metrics), a baseline profile of the training features
(``log_profile("train", ...)``, what a drift monitor compares serving data with), the
trained model as an output and, written to
``--model-dir``, as an artifact (hashed; in the local store also copied), a log line
per epoch, and what the process used, sampled every ``--system-interval`` seconds.
``--fail`` sets a learning rate that makes training diverge: the step raises
``FloatingPointError`` and the run ends ``failed``, which alerts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import pipeline_sdk
from pipeline_sdk.config import home_dir
from pipeline_sdk.system import MIN_INTERVAL

from ._cli import identity, positive_float, positive_int, setup_logging
from .data import BASELINE, FEATURES, TRAIN_ROWS, TRAIN_SEED, TRAIN_SHARE, Model, columns, make_dataset

log = logging.getLogger("demo.train")

DIVERGING_LR = 1000.0  # the learning rate of --fail
DIVERGED = 10.0  # loss above this many times the first epoch's counts as diverged
SYSTEM_INTERVAL = 0.25  # seconds between two system samples: a short demo run still shows a profile


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is invalid: must be a finite number of seconds, 0 or more")
    return value


def system_interval(text: str) -> float:
    """0 (no samples) or a number of seconds from pipeline_sdk.system.MIN_INTERVAL."""
    value = seconds(text)
    if 0 < value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"{text} is invalid: must be 0 (no samples) or at least {MIN_INTERVAL:g}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.train", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=positive_int, default=5, help="passes over the data (default 5)")
    p.add_argument("--lr", type=positive_float, default=0.5, help="learning rate (default 0.5)")
    p.add_argument(
        "--rows",
        type=positive_int,
        default=TRAIN_ROWS,
        help=f"customers in the dataset (default {TRAIN_ROWS})",
    )
    p.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"dataset seed (default {TRAIN_SEED})")
    p.add_argument(
        "--sleep",
        type=seconds,
        default=0.2,
        help="seconds each epoch also waits, so the run has a duration to show (default 0.2)",
    )
    p.add_argument("--fail", action="store_true", help=f"diverge on purpose (learning rate {DIVERGING_LR:g})")
    p.add_argument(
        "--model-dir",
        type=Path,
        help="where the model file is written, one folder per run (default: demo-models under MLOBS_HOME, "
        "the pod's one writable volume)",
    )
    p.add_argument(
        "--system-interval",
        type=system_interval,
        default=SYSTEM_INTERVAL,
        help=f"seconds between two samples of CPU and memory, 0 for none (default {SYSTEM_INTERVAL:g})",
    )
    return p


def save_model(model: Model, folder: Path) -> Path:
    """The model as JSON in ``folder``: what the model API would load."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.json"
    path.write_text(json.dumps({"weights": model.weights, "bias": model.bias, "features": list(FEATURES)}))
    return path


def train(args: argparse.Namespace) -> Model:
    lr = DIVERGING_LR if args.fail else args.lr
    pipeline, step = identity("demo-diverge" if args.fail else "demo-train", "fit")
    params = {"epochs": args.epochs, "lr": lr, "rows": args.rows, "seed": args.seed, "model": "logreg"}
    interval = args.system_interval
    with pipeline_sdk.run(pipeline=pipeline, step=step, params=params, system_interval=interval) as run:
        log.info("run %s of %s/%s: %s", run.run_id, pipeline, step, run.client.describe())
        xs, ys = make_dataset(args.rows, args.seed)
        split = int(len(xs) * TRAIN_SHARE)
        run.log_input(
            "dataset",
            {"rows": len(xs), "features": list(FEATURES), "churn_rate": round(sum(ys) / len(ys), 4)},
            source=f"synthetic://churn?seed={args.seed}&rows={args.rows}",
        )
        run.log_profile(BASELINE, columns(xs[:split]))  # the baseline of the drift monitor
        model = Model.zeros()
        first_loss = None
        for epoch in range(args.epochs):
            loss = model.epoch(xs[:split], ys[:split], lr)
            first_loss = first_loss if first_loss is not None else loss
            if not math.isfinite(loss) or loss > DIVERGED * first_loss:
                raise FloatingPointError(
                    f"training diverged at epoch {epoch}: loss {loss:.4g} (first epoch {first_loss:.4g});"
                    f" lower the learning rate {lr:g}"
                )
            accuracy = model.accuracy(xs[split:], ys[split:])
            run.log_metrics({"loss": loss, "accuracy": accuracy}, step=epoch)
            log.info(
                "epoch %d: loss %.4f, validation accuracy %.3f",
                epoch,
                loss,
                accuracy,
                extra={"epoch": epoch, "loss": round(loss, 6), "accuracy": round(accuracy, 6)},
            )
            time.sleep(args.sleep)
        run.log_metric("val_accuracy", model.accuracy(xs[split:], ys[split:]))
        run.log_metric("train_loss", loss)
        saved = save_model(model, (args.model_dir or home_dir() / "demo-models") / run.run_id)
        run.log_output(
            "model",
            {"weights": [round(w, 4) for w in model.weights], "bias": round(model.bias, 4)},
            destination=str(saved),
        )
        run.log_artifact(saved, "churn-logreg")  # hashed in the background; the run's end waits for it
        return model


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    train(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
