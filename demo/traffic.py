"""``python -m demo.traffic``: simulated users calling the demo model API.

It waits for the API's ``/healthz`` (polling, up to ``--ready-timeout``), then sends
``--requests`` predictions from ``--users`` concurrent users, each with its own
``x-user-id``.  A few requests are bad on purpose, so the model-API dashboard has
client errors to show: about 5 % leave out a feature (422), 2 % ask for an unknown
model (404), 2 % send a body that is not JSON (400) and 2 % go to a path no route
serves (404, counted under the handler ``none``).  It prints its progress and a
summary by status, and exits 1 if any request failed to connect, timed out or got
a 5xx.

``--shift FEATURE=SIGMAS`` moves one feature of every request by that many standard
deviations of the training data (``tenure_months=2``: two years more tenure), so that
a drift monitor finds it; a value the shift takes below 0 is sent as 0, as the API
refuses negative features.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ._cli import positive_float, positive_int
from .data import FEATURES, SERVED, training_std

# The bad requests, by kind: the share of all requests, and the status the API answers.
BAD = {
    "missing-feature": (0.05, 422),  # a feature left out
    "unknown-model": (0.02, 404),  # a model that is not served
    "bad-json": (0.02, 400),  # a body that is not JSON
    "unknown-path": (0.02, 404),  # a path no route serves
}
BROKEN_JSON = b'{"tenure_months": 12, "monthly_charges": '  # what a "bad-json" request sends


@dataclass(frozen=True)
class Request:
    user: str
    model: str
    body: dict[str, float]
    kind: str = "good"  # or one of BAD

    @property
    def path(self) -> str:
        return f"/v1/predict/{self.model}" if self.kind == "unknown-path" else f"/predict/{self.model}"

    def data(self) -> bytes:
        return BROKEN_JSON if self.kind == "bad-json" else json.dumps(self.body).encode()


@dataclass(frozen=True)
class Shift:
    """Move ``feature`` by ``sigmas`` standard deviations of the training data."""

    feature: str
    sigmas: float

    def apply(self, body: dict[str, float]) -> None:
        if self.feature in body:
            moved = body[self.feature] + self.sigmas * training_std()[self.feature]
            body[self.feature] = max(0.0, round(moved, 2))


def shift_arg(text: str) -> Shift:
    """``FEATURE=SIGMAS`` of --shift: a feature of the model and a finite number."""
    feature, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be FEATURE=SIGMAS, e.g. tenure_months=2")
    if feature not in FEATURES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: unknown feature {feature!r}; one of {', '.join(FEATURES)}"
        )
    try:
        sigmas = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: {value!r} is not a number") from None
    if not math.isfinite(sigmas):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: {value!r} is not a finite number")
    return Shift(feature, sigmas)


def plan(requests: int, users: int, seed: int, shift: Shift | None = None) -> list[Request]:
    """The requests to send, the same for the same seed (and ``shift``, the same draws moved)."""
    rng = random.Random(seed)
    served = sorted(SERVED)
    out: list[Request] = []
    for _ in range(requests):
        body = {
            "tenure_months": float(rng.randint(1, 72)),
            "monthly_charges": round(rng.uniform(20, 120), 2),
            "support_calls": float(rng.randint(0, 6)),
        }
        if shift is not None:
            shift.apply(body)
        draw, kind = rng.random(), "good"
        for bad, (share, _) in BAD.items():
            if draw < share:
                kind = bad
                break
            draw -= share
        if kind == "missing-feature":
            del body[rng.choice(FEATURES)]
        model = "churn-unknown" if kind == "unknown-model" else rng.choice(served)
        out.append(Request(f"user-{rng.randint(1, users * 4)}", model, body, kind))
    return out


def wait_ready(url: str, timeout: float) -> None:
    """Poll ``url``/healthz until it answers 200, or exit naming the last error."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - http(s) only, checked
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"the model API at {url} is not ready after {timeout:g} s: {last}")


def send(url: str, request: Request, timeout: float) -> str:
    """The outcome of one request: its HTTP status, or the transport error's class."""
    req = urllib.request.Request(  # noqa: S310 - http(s) only, checked in main
        url + request.path,
        data=request.data(),
        headers={"content-type": "application/json", "x-user-id": request.user},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            resp.read()
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return type(getattr(exc, "reason", exc)).__name__


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.traffic", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the model API's base URL")
    p.add_argument("--requests", type=positive_int, default=300, help="requests to send (default 300)")
    p.add_argument("--users", type=positive_int, default=25, help="concurrent users (default 25)")
    p.add_argument("--seed", type=int, default=11, help="seed of the request plan (default 11)")
    p.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per request (default 10)")
    p.add_argument(
        "--ready-timeout",
        type=positive_float,
        default=120.0,
        help="seconds to wait for /healthz (default 120)",
    )
    p.add_argument(
        "--shift",
        type=shift_arg,
        metavar="FEATURE=SIGMAS",
        help="move FEATURE by SIGMAS standard deviations of the training data (e.g. tenure_months=2)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        cli.error(f"--url {args.url!r} is invalid: must start with http:// or https://")

    wait_ready(url, args.ready_timeout)
    requests = plan(args.requests, args.users, args.seed, args.shift)
    if args.shift is not None:
        print(f"traffic: {args.shift.feature} moved by {args.shift.sigmas:g} standard deviations", flush=True)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    step = max(1, len(requests) // 10)
    started = time.monotonic()

    def one(request: Request) -> None:
        outcome = send(url, request, args.timeout)
        with lock:
            outcomes[outcome] += 1
            done = sum(outcomes.values())
            if done % step == 0 or done == len(requests):
                print(f"traffic: {done}/{len(requests)} sent", flush=True)

    with ThreadPoolExecutor(max_workers=args.users) as pool:
        list(pool.map(one, requests))
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    print(
        f"traffic: {len(requests)} requests from {args.users} users in {elapsed:.1f} s ({summary})",
        flush=True,
    )
    failed = {k: v for k, v in outcomes.items() if not k.isdigit() or k.startswith("5")}
    if failed or not any(k.startswith("2") for k in outcomes):
        print(f"traffic: failed: {failed or 'no request succeeded'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
