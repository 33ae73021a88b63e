"""The pipeline exporter run as a process, for tests: ``python -m exporters.pipeline_exporter``."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT


class Exporter:
    """``python -m exporters.pipeline_exporter`` against a fake API."""

    def __init__(self, api: str, home: Path, fluentd_port: int, *extra: str, **more_env: str) -> None:
        env = {k_: v for k_, v in os.environ.items() if not k_.startswith("MLOBS_")}
        env.update(MLOBS_HOME=str(home), MLOBS_FLUENTD_HOST="127.0.0.1", MLOBS_FLUENTD_PORT=str(fluentd_port))
        env.update(more_env)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporters.pipeline_exporter",
                "--api-server",
                api,
                "--listen",
                "127.0.0.1:0",
                "--settle",
                "0.5",
                "--watch-timeout",
                "3",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "serving on" in line, line
        self.url = "http://" + line.rsplit(" ", 1)[1].strip()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, text = self.get("/metrics")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, tuple(sorted(labels.items()))))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
