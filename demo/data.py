"""A synthetic, seeded churn dataset and the model the demo trains and serves."""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FEATURES = ("tenure_months", "monthly_charges", "support_calls")  # the model's inputs, in order
TRAIN_ROWS, TRAIN_SEED = 2000, 7  # the training data of `python -m demo.train` with its defaults
TRAIN_SHARE = 0.8  # the share of the rows it trains on; the rest validates
BASELINE = "train"  # the name of the baseline profile it logs of its training features
# How the synthetic labels are drawn: churn grows with charges and support calls, falls with tenure.
_TRUE_WEIGHTS = (-0.08, 0.03, 0.6)
_TRUE_BIAS = -1.0
# Feature scaling the model applies (rough mean and spread of the synthetic data).
_CENTER = (24.0, 70.0, 2.0)
_SCALE = (14.0, 25.0, 1.5)


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def make_dataset(rows: int, seed: int) -> tuple[list[tuple[float, ...]], list[int]]:
    """``rows`` customers with FEATURES and a churned label, the same for the same seed."""
    if rows < 1:
        raise ValueError(f"rows={rows} is invalid: must be at least 1")
    rng = random.Random(seed)
    xs: list[tuple[float, ...]] = []
    ys: list[int] = []
    for _ in range(rows):
        x = (float(rng.randint(1, 72)), round(rng.uniform(20, 120), 2), float(rng.randint(0, 6)))
        z = _TRUE_BIAS + sum(w * (v - m) for w, v, m in zip(_TRUE_WEIGHTS, x, _CENTER, strict=True))
        xs.append(x)
        ys.append(1 if rng.random() < sigmoid(z) else 0)
    return xs, ys


def columns(xs: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """The rows ``xs`` as one column per feature, what ``log_profile`` and ``drift.Profile`` take."""
    return {name: [x[i] for x in xs] for i, name in enumerate(FEATURES)}


@functools.cache
def training_std(rows: int = TRAIN_ROWS, seed: int = TRAIN_SEED) -> dict[str, float]:
    """The standard deviation of each feature over the rows the model trains on."""
    xs, _ = make_dataset(rows, seed)
    return {name: statistics.pstdev(col) for name, col in columns(xs[: int(rows * TRAIN_SHARE)]).items()}


def scale(x: Sequence[float]) -> tuple[float, ...]:
    return tuple((v - m) / s for v, m, s in zip(x, _CENTER, _SCALE, strict=True))


@dataclass
class Model:
    """Logistic regression over the scaled FEATURES."""

    weights: list[float]
    bias: float = 0.0

    @classmethod
    def zeros(cls) -> Model:
        return cls([0.0] * len(FEATURES))

    def score(self, x: Sequence[float]) -> float:
        return sigmoid(self.bias + sum(w * v for w, v in zip(self.weights, scale(x), strict=True)))

    def epoch(self, xs: Sequence[Sequence[float]], ys: Sequence[int], lr: float) -> float:
        """One pass of full-batch gradient descent; the mean log loss before the update."""
        grad_w = [0.0] * len(self.weights)
        grad_b = 0.0
        loss = 0.0
        for x, y in zip(xs, ys, strict=True):
            sx = scale(x)
            z = self.bias + sum(w * v for w, v in zip(self.weights, sx, strict=True))
            p = sigmoid(z)
            # log loss from z directly, so that a diverging model gives inf rather than an error
            loss += max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))
            for i, v in enumerate(sx):
                grad_w[i] += (p - y) * v
            grad_b += p - y
        n = len(ys)
        self.weights = [w - lr * g / n for w, g in zip(self.weights, grad_w, strict=True)]
        self.bias -= lr * grad_b / n
        return loss / n

    def accuracy(self, xs: Sequence[Sequence[float]], ys: Sequence[int]) -> float:
        hits = sum(1 for x, y in zip(xs, ys, strict=True) if (self.score(x) >= 0.5) == bool(y))
        return hits / len(ys)


# The model the API serves: what `python -m demo.train` learns with its defaults, rounded.
SERVED = {"churn-logreg": Model([-0.64, 0.26, 0.27], bias=-0.26)}


def features_of(payload: object) -> tuple[float, ...]:
    """The FEATURES of a request body, or ValueError naming the field that is wrong."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"body must be a JSON object with {', '.join(FEATURES)}")
    values: list[float] = []
    for name in FEATURES:
        if name not in payload:
            raise ValueError(f"{name} is missing")
        value = payload[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is invalid: must be a finite number")
        if value < 0:
            raise ValueError(f"{name}={value!r} is invalid: must not be negative")
        values.append(float(value))
    return tuple(values)
