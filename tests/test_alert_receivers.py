"""The Alertmanager configuration the chart renders, for every receiver combination, checked by amtool.

mlobs-core renders alerting/alertmanager.yaml with the receivers its values switch on: email,
Slack (``slack_configs.api_url_file``), a webhook (``webhook_configs``, ``url`` or ``url_file``,
an optional bearer token file) and Microsoft Teams (``msteamsv2_configs.webhook_url_file``),
each alone or with email, and kube-prometheus-stack's own alerts to a receiver of their own
(``alerting.platformAlerts``).  Each render is taken out of its Secret, config and templates, and
checked with the real ``amtool check-config``; its routes with ``amtool config routes test``.

The Alertmanager here (Debian's) may be older than the one kube-prometheus-stack runs: a setting
it does not know (``url_file`` since 0.26, ``msteamsv2_configs`` since 0.28) is then held to the
field names of Alertmanager 0.34's own config structs instead, and the rest of that render still
goes through amtool.  With a newer amtool every render goes through it whole.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT

CORE = ROOT / "charts" / "mlobs-core"


def _upstream_values() -> Path:
    """kube-prometheus-stack's default values, of the version charts/mlobs/Chart.yaml pins."""
    deps = yaml.safe_load((ROOT / "charts" / "mlobs" / "Chart.yaml").read_text())["dependencies"]
    [stack] = [d for d in deps if d["name"] == "kube-prometheus-stack"]
    name = f"kube-prometheus-stack-{stack['version']}"
    return ROOT.parent / "shared" / "reference" / "upstream-charts" / name / "values.yaml"


UPSTREAM_VALUES = _upstream_values()
OURS = ("mlobs-critical", "mlobs-warning")  # the receivers of mlobs' alerts
SECRETS = "/etc/alertmanager/secrets"  # where kube-prometheus-stack mounts alertmanagerSpec.secrets

# Fields of the integrations newer than the oldest Alertmanager the tests run (ALERTMANAGER_MIN in
# versions.env), from Alertmanager v0.34.0's config
# structs (notify/webhook/config.go WebhookConfig, notify/msteamsv2/config.go MSTeamsV2Config, each
# with the inline NotifierConfig's send_resolved), and the release that brought each setting.
V0_34_FIELDS = {
    "webhook_configs": {
        "send_resolved",
        "http_config",
        "url",
        "url_file",
        "max_alerts",
        "timeout",
        "payload",
    },
    "msteamsv2_configs": {"send_resolved", "http_config", "webhook_url", "webhook_url_file", "title", "text"},
}
SINCE = {("webhook_configs", "url_file"): (0, 26, 0), ("msteamsv2_configs", None): (0, 28, 0)}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: `make test` installs it (scripts/ensure-prometheus.sh)")
    return path


@cache
def amtool_version() -> tuple[int, ...]:
    out = subprocess.run([_tool("amtool"), "--version"], check=True, capture_output=True, text=True)
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return tuple(int(n) for n in found.groups())


def render(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The rendered Alertmanager config and its templates (file name -> text)."""
    out = helm_python.Chart.load(CORE).render(values, name="mlobs", namespace="mlobs", is_install=True)
    docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d]
    [secret] = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "mlobs-alertmanager-config"
    ]
    data = dict(secret["stringData"])
    config = yaml.safe_load(data.pop("alertmanager.yaml"))
    return config, data


def write(directory: Path, config: dict[str, Any], templates: dict[str, str]) -> Path:
    """The config and templates in ``directory``, the templates glob pointed there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (directory / name).write_text(text)
    assert config["templates"] == ["/etc/alertmanager/config/*.tmpl"]
    config = {**config, "templates": [str(directory / "*.tmpl")]}
    path = directory / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("amtool"), *args], check=False, capture_output=True, text=True, cwd="/")


def needs(config: dict[str, Any]) -> dict[tuple[str, str | None], tuple[int, ...]]:
    """The settings of ``config`` that need a newer Alertmanager, with the release each needs."""
    found = {}
    for receiver in config["receivers"]:
        for (integration, key), version in SINCE.items():
            for entry in receiver.get(integration, []):
                if key is None or key in entry:
                    found[(integration, key)] = version
    return found


def newer_field_problems(config: dict[str, Any]) -> list[str]:
    """Keys of the newer integrations that Alertmanager 0.34 does not know."""
    return [
        f"{receiver['name']}: {integration}: unknown field {key!r}"
        for receiver in config["receivers"]
        for integration, fields in V0_34_FIELDS.items()
        for entry in receiver.get(integration, [])
        for key in sorted(set(entry) - fields)
    ]


def check(config: dict[str, Any], templates: dict[str, str], directory: Path) -> str:
    """amtool check-config on the render, or on all of it this amtool knows plus a field check."""
    newer = {k: v for k, v in needs(config).items() if v > amtool_version()}
    checked = copy.deepcopy(config)
    if newer:
        assert newer_field_problems(config) == []
        for receiver in checked["receivers"]:
            for integration, key in newer:
                if key is None:
                    receiver.pop(integration, None)
                else:
                    receiver[integration] = [e for e in receiver.get(integration, []) if key not in e]
                    if not receiver[integration]:
                        del receiver[integration]
    run = amtool("check-config", str(write(directory, checked, templates)))
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def integrations(config: dict[str, Any]) -> dict[str, list[str]]:
    """Each receiver's integrations, by name."""
    return {r["name"]: sorted(k for k in r if k.endswith("_configs")) for r in config["receivers"]}


SLACK = {"enabled": True, "webhookSecret": {"name": "mlobs-slack"}}
HOOK = {"enabled": True, "url": "https://hooks.example.com/mlobs"}
HOOK_SECRET = {"enabled": True, "urlSecret": {"name": "mlobs-hook"}, "tokenSecret": {"name": "mlobs-hook"}}
TEAMS = {"enabled": True, "webhookSecret": {"name": "mlobs-teams", "key": "workflow"}}
NO_EMAIL = {"enabled": False}

COMBINATIONS = {  # id -> (alerting values, the integrations of mlobs' receivers)
    "email": ({}, ["email_configs"]),
    "slack": ({"email": NO_EMAIL, "slack": SLACK}, ["slack_configs"]),
    "webhook": ({"email": NO_EMAIL, "webhook": HOOK}, ["webhook_configs"]),
    "webhook-secrets": ({"email": NO_EMAIL, "webhook": HOOK_SECRET}, ["webhook_configs"]),
    "msteams": ({"email": NO_EMAIL, "msteams": TEAMS}, ["msteamsv2_configs"]),
    "email+slack": ({"slack": SLACK}, ["email_configs", "slack_configs"]),
    "email+webhook": ({"webhook": HOOK}, ["email_configs", "webhook_configs"]),
    "email+msteams": ({"msteams": TEAMS}, ["email_configs", "msteamsv2_configs"]),
    "all": (
        {"slack": SLACK, "webhook": HOOK_SECRET, "msteams": TEAMS, "platformAlerts": {"enabled": True}},
        ["email_configs", "msteamsv2_configs", "slack_configs", "webhook_configs"],
    ),
    "none": ({"email": NO_EMAIL}, []),
}


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_receiver_combination_renders_a_config_amtool_accepts(combination: str, tmp_path: Path) -> None:
    values, expected = COMBINATIONS[combination]
    config, templates = render({"alerting": values})
    found = integrations(config)
    assert {name: found[name] for name in OURS} == dict.fromkeys(OURS, expected)
    assert found["null"] == []
    assert set(templates) == {"chat.tmpl", "email.tmpl", "grafana-url.tmpl"}
    out = check(config, templates, tmp_path)
    assert "SUCCESS" in out and "1 templates" in out


def test_each_integration_reads_its_secret_from_a_mounted_file() -> None:
    config, _ = render(
        {"alerting": {"slack": {**SLACK, "channel": "#ml-alerts"}, "webhook": HOOK_SECRET, "msteams": TEAMS}}
    )
    receivers = {r["name"]: r for r in config["receivers"]}
    for name in OURS:
        receiver = receivers[name]
        assert receiver["slack_configs"] == [
            {
                "send_resolved": True,
                "api_url_file": f"{SECRETS}/mlobs-slack/url",
                "channel": "#ml-alerts",
                "title": '{{ template "mlobs.slack.title" . }}',
                "text": '{{ template "mlobs.slack.text" . }}',
            }
        ]
        assert receiver["webhook_configs"] == [
            {
                "send_resolved": True,
                "url_file": f"{SECRETS}/mlobs-hook/url",
                "http_config": {
                    "authorization": {"type": "Bearer", "credentials_file": f"{SECRETS}/mlobs-hook/token"}
                },
            }
        ]
        assert receiver["msteamsv2_configs"] == [
            {
                "send_resolved": True,
                "webhook_url_file": f"{SECRETS}/mlobs-teams/workflow",
                "title": '{{ template "mlobs.msteams.title" . }}',
                "text": '{{ template "mlobs.msteams.text" . }}',
            }
        ]
    text = yaml.safe_dump(config)
    assert "api_url:" not in text and "webhook_url:" not in text and "credentials:" not in text


def test_a_plain_webhook_url_has_no_token_unless_one_is_named() -> None:
    config, _ = render({"alerting": {"webhook": HOOK}})
    [hook] = {r["name"]: r for r in config["receivers"]}["mlobs-critical"]["webhook_configs"]
    assert hook == {"send_resolved": True, "url": "https://hooks.example.com/mlobs"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"slack": {"enabled": True}}, "alerting.slack.webhookSecret.name: name the Secret"),
        ({"msteams": {"enabled": True}}, "alerting.msteams.webhookSecret.name: name the Secret"),
        ({"webhook": {"enabled": True}}, "alerting.webhook: set url, or urlSecret.name"),
        ({"slak": {"enabled": True}}, "at '/alerting': additional properties 'slak' not allowed"),
        ({"webhook": {"enabled": True, "url": "hooks.example.com"}}, "at '/alerting/webhook/url': 'hooks"),
        ({"platformAlerts": {"enabled": True, "to": "nobody"}}, "at '/alerting/platformAlerts/to': 'nobody'"),
        ({"runbookBaseUrl": "runbooks/"}, "at '/alerting/runbookBaseUrl': 'runbooks/' does not match"),
    ],
)
def test_a_receiver_without_what_it_needs_is_an_error_naming_the_value(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError), match=re.escape(message)):
        render({"alerting": values})


def test_the_checks_can_fail(tmp_path: Path) -> None:
    config, templates = render({"alerting": {"slack": SLACK}})
    broken = copy.deepcopy(config)
    broken["receivers"][1]["slack_configs"][0]["api_url_fiel"] = "/x"
    run = amtool("check-config", str(write(tmp_path / "typo", broken, templates)))
    assert run.returncode == 1 and "api_url_fiel" in run.stdout + run.stderr
    bad_template = {**templates, "chat.tmpl": templates["chat.tmpl"] + '{{ define "mlobs.unclosed" }}'}
    run = amtool("check-config", str(write(tmp_path / "template", config, bad_template)))
    assert run.returncode == 1 and "chat.tmpl" in run.stdout + run.stderr
    teams, _ = render({"alerting": {"msteams": TEAMS}})
    teams["receivers"][1]["msteamsv2_configs"][0]["webhook_url_fiel"] = "/x"
    assert newer_field_problems(teams) == [
        "mlobs-critical: msteamsv2_configs: unknown field 'webhook_url_fiel'"
    ]


def test_the_alertmanager_kube_prometheus_stack_runs_knows_every_setting_rendered() -> None:
    if not UPSTREAM_VALUES.is_file():
        pytest.skip(f"{UPSTREAM_VALUES} is not here (the upstream charts' reference values)")
    upstream = yaml.safe_load(UPSTREAM_VALUES.read_text())
    tag = upstream["alertmanager"]["alertmanagerSpec"]["image"]["tag"]
    found = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert found, tag
    running = tuple(int(n) for n in found.groups())
    config, _ = render({"alerting": COMBINATIONS["all"][0]})
    assert set(needs(config)) == set(SINCE), "the 'all' render uses every newer setting"
    assert all(version <= running for version in SINCE.values()), (tag, SINCE)


# ---- routing: only mlobs alerts reach the ML team --------------------------------------------------------

MLOBS_CRITICAL = (
    "alertname=MLPipelineRunFailed",
    f"{c.ALERT_LABEL_STACK}={c.ALERT_STACK}",
    "severity=critical",
    "pipeline=train",
    "step=fit",
)
MLOBS_WARNING = (
    "alertname=FluentdOutputRetrying",
    f"{c.ALERT_LABEL_STACK}={c.ALERT_STACK}",
    "severity=warning",
)
CRASH_LOOPING = ("alertname=KubePodCrashLooping", "severity=critical", "namespace=ml", "pod=train-fit-1")
NODE_WARNING = ("alertname=NodeFilesystemAlmostOutOfSpace", "severity=warning")
WATCHDOG = ("alertname=Watchdog", "severity=none")


def route(path: Path, labels: tuple[str, ...]) -> str:
    run = amtool("config", "routes", "test", f"--config.file={path}", *labels)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip()


def routes_of(config_path: Path) -> dict[str, str]:
    return {
        name: route(config_path, labels)
        for name, labels in (
            ("mlobs critical", MLOBS_CRITICAL),
            ("mlobs warning", MLOBS_WARNING),
            ("KubePodCrashLooping", CRASH_LOOPING),
            ("node warning", NODE_WARNING),
            ("Watchdog", WATCHDOG),
        )
    }


def test_by_default_only_mlobs_alerts_reach_the_ml_team(tmp_path: Path) -> None:
    config, templates = render({})
    assert routes_of(write(tmp_path / "chart", config, templates)) == {
        "mlobs critical": "mlobs-critical",
        "mlobs warning": "mlobs-warning",
        "KubePodCrashLooping": "null",
        "node warning": "null",
        "Watchdog": "null",
    }
    source = ROOT / "alerting" / "alertmanager.yaml"  # the file the live tests run
    assert route(source, MLOBS_CRITICAL) == "mlobs-critical" and route(source, CRASH_LOOPING) == "null"


def test_platform_alerts_go_to_their_own_receiver_with_one_value(tmp_path: Path) -> None:
    config, templates = render({"alerting": {"platformAlerts": {"enabled": True, "to": "sre@example.com"}}})
    assert routes_of(write(tmp_path, config, templates)) == {
        "mlobs critical": "mlobs-critical",
        "mlobs warning": "mlobs-warning",
        "KubePodCrashLooping": "platform",
        "node warning": "platform",
        "Watchdog": "null",  # always firing (a dead man's switch): never mailed
    }
    [platform] = [r for r in config["receivers"] if r["name"] == "platform"]
    [mail] = platform["email_configs"]
    assert mail["to"] == "sre@example.com" and mail["text"] == '{{ template "mlobs.email.text" . }}'
    # Platform email stays on when mlobs' own email is off (Slack only, say).
    slack_only, _ = render(
        {"alerting": {"email": NO_EMAIL, "slack": SLACK, "platformAlerts": {"enabled": True}}}
    )
    assert integrations(slack_only)["platform"] == ["email_configs"]


def test_the_routing_check_catches_severity_only_routes(tmp_path: Path) -> None:
    """The routes before stack="mlobs": every critical alert of the cluster emailed the ML team."""
    config, templates = render({})
    for child in config["route"]["routes"]:
        child["matchers"] = [m for m in child["matchers"] if not m.startswith(c.ALERT_LABEL_STACK)]
    assert route(write(tmp_path, config, templates), CRASH_LOOPING) == "mlobs-critical"
