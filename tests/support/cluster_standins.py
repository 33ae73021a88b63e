"""Stand-ins for docker, kind, helm, kubectl and curl, for testing `make up` without a cluster.

``python tests/support/cluster_standins.py TOOL ARG...`` appends ``[TOOL, ARG...]`` to the JSON-lines log
``$MLOBS_STANDIN_LOG`` and answers from the world in ``$MLOBS_STANDIN_WORLD``, a JSON file that it
updates as the real tools would change the machine: ``kind create cluster`` makes a cluster with
the port mappings of the config it is given, ``docker build`` adds an image, ``kind load`` puts it
into the node, ``helm upgrade`` deploys.  A call this module does not know fails with exit code 97,
so a script that starts using something new fails its tests until the stand-in learns it.

Helm's part is the real Helm engine (helm-python-sdk): ``helm package`` packages, ``helm upgrade``
renders the packaged mlobs-core of the umbrella's ``charts/`` with the umbrella's values and the
``--set``/``--set-string`` flags (parsed by Helm's own parser), and keeps each workload's pod
template.  A template that differs from the one deployed is a rollout, recorded in ``rollouts``.

The scenario knobs in the world: ``versions`` (each tool's version output), ``docker`` (``running``,
``mem_total`` in bytes), ``polls_before`` (how many queries of ``statefulset:<name>``, ``rules`` and
``grafana`` answer "not yet" first; ``-1``: never ready).

Cohesive over 400 lines: one stand-in per tool, each a table of the calls it answers.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

NOT_MODELLED = 97


def fresh_world(kind: str, kubectl: str, helm: str) -> dict[str, Any]:
    """A laptop with Docker and the tools installed at these versions (x.y.z), and no cluster."""
    return {
        "versions": {
            "kind": f"kind v{kind} go1.24.6 linux/amd64",
            "kubectl": f"Client Version: v{kubectl}\nKustomize Version: v5.7.1",
            "helm": f"v{helm}+g3d8990f",
        },
        "docker": {"running": True, "mem_total": 8 * 2**30},
        "images": [],
        "clusters": {},
        "contexts": [],
        "release": None,
        "workloads": {},
        "rule_groups": [],
        "rollouts": [],
        "jobs": [],
        "job_images": {},
        "polls_before": {},
        "polls": {},
    }


class Answer(Exception):
    """Finish the call: print ``out`` to stdout, ``err`` to stderr, exit with ``code``."""

    def __init__(self, code: int = 0, out: str = "", err: str = "") -> None:
        super().__init__(err)
        self.code, self.out, self.err = code, out, err


def not_modelled(tool: str, args: list[str]) -> Answer:
    return Answer(NOT_MODELLED, err=f"stand-in {tool}: call not modelled: {args}\n")


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``args``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def without_options(args: list[str], *names: str) -> list[str]:
    """``args`` without the options ``names`` and their values (``--name value`` or ``--name=value``)."""
    rest, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{n}=" for n in names)):
            rest.append(arg)
    return rest


def ready(world: dict[str, Any], what: str) -> bool:
    """Count a query of ``what``; true once it has been asked more often than polls_before says."""
    before = world["polls_before"].get(what, 0)
    asked = world["polls"].get(what, 0)
    world["polls"][what] = asked + 1
    return before >= 0 and asked >= before


# ---- docker ---------------------------------------------------------------------------------------


def docker(world: dict[str, Any], args: list[str]) -> Answer:  # noqa: PLR0911 - one answer per modelled call
    if not world["docker"]["running"]:
        return Answer(1, err="Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n")
    match args:
        case ["info"]:
            return Answer(0, "Server:\n Containers: 1\n")
        case ["info", "--format", "{{.MemTotal}}"]:
            return Answer(0, f"{world['docker']['mem_total']}\n")
        case ["image", "inspect", ref]:
            return (
                Answer(0, "[{}]\n")
                if ref in world["images"]
                else Answer(1, "[]\n", f"No such image: {ref}\n")
            )
        case ["build", "--quiet", "--tag", ref, "--file", dockerfile, "."]:
            if not Path(dockerfile).is_file():
                return Answer(1, err=f"failed to read dockerfile: open {dockerfile}: no such file\n")
            world["images"].append(ref)
            return Answer(0, "sha256:0123\n")
        case ["exec", node, "crictl", "inspecti", ref]:
            for cluster in world["clusters"].values():
                if node in cluster["nodes"]:
                    found = ref in cluster["node_images"]
                    return Answer(0, "{}\n") if found else Answer(1, err=f'no such image "{ref}" present\n')
            return Answer(1, err=f"Error response from daemon: No such container: {node}\n")
        case ["port", node, port_proto]:
            for cluster in world["clusters"].values():
                if node in cluster["nodes"]:
                    host = cluster["ports"].get(port_proto.split("/")[0])
                    if host is None:
                        return Answer(1, err=f"Error: No public port '{port_proto}' published for {node}\n")
                    return Answer(0, f"127.0.0.1:{host}\n")
            return Answer(1, err=f"Error response from daemon: No such container: {node}\n")
    raise not_modelled("docker", args)


# ---- kind -----------------------------------------------------------------------------------------


def kind(world: dict[str, Any], args: list[str]) -> Answer:  # noqa: PLR0911 - one answer per modelled call
    name = option(args, "--name") or "kind"
    clusters = world["clusters"]
    match args[:2]:
        case ["version"]:
            return Answer(0, world["versions"]["kind"] + "\n")
        case ["get", "clusters"]:
            return (
                Answer(0, "".join(f"{c}\n" for c in clusters))
                if clusters
                else Answer(0, err="No kind clusters found.\n")
            )
        case ["create", "cluster"]:
            import yaml

            if name in clusters:
                return Answer(
                    1,
                    err=f'ERROR: failed to create cluster: node(s) already exist for "{name}"\n',
                )
            config = yaml.safe_load(Path(option(args, "--config") or "").read_text())
            [node] = config["nodes"]
            ports = {str(m["containerPort"]): m["hostPort"] for m in node["extraPortMappings"]}
            clusters[name] = {
                "nodes": [f"{name}-control-plane"],
                "node_images": [],
                "ports": ports,
                "config": config,
            }
            world["contexts"].append(f"kind-{name}")
            return Answer(0, err=f'Creating cluster "{name}" ...\n')
        case ["get", "nodes"]:
            return (
                Answer(0, "".join(f"{n}\n" for n in clusters[name]["nodes"]))
                if name in clusters
                else Answer(0)
            )
        case ["load", "docker-image"]:
            ref = args[2]
            if ref not in world["images"]:
                return Answer(1, err=f'ERROR: image: "{ref}" not present locally\n')
            cluster = clusters[name]
            targets = (option(args, "--nodes") or ",".join(cluster["nodes"])).split(",")
            assert set(targets) <= set(cluster["nodes"]), targets
            cluster["node_images"].append(ref)
            return Answer(0)
        case ["export", "kubeconfig"]:
            if f"kind-{name}" not in world["contexts"]:
                world["contexts"].append(f"kind-{name}")
            return Answer(0)
        case ["delete", "cluster"]:
            clusters.pop(name, None)
            world["contexts"] = [c for c in world["contexts"] if c != f"kind-{name}"]
            world["release"], world["workloads"] = None, {}
            return Answer(0, err=f'Deleting cluster "{name}" ...\n')
    raise not_modelled("kind", args)


# ---- helm -----------------------------------------------------------------------------------------


def chart_dependencies(chart_dir: Path) -> list[dict[str, Any]]:
    import yaml

    deps: list[dict[str, Any]] = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["dependencies"]
    return deps


def dependency_status(chart_dir: Path, dep: dict[str, Any]) -> str:
    archives = sorted((chart_dir / "charts").glob(f"{dep['name']}-*.tgz"))
    if not archives:
        return "missing"
    if len(archives) > 1:
        return "too many matches"
    return "ok" if archives[0].name == f"{dep['name']}-{dep['version']}.tgz" else "wrong version"


def values_of(args: list[str]) -> dict[str, Any]:
    """The values the flags give, in Helm's order: -f files, then --set, then --set-string."""
    import helm_python
    import yaml

    merged: dict[str, Any] = {}
    pairs = list(itertools.pairwise(args))
    for flag, value in pairs:
        if flag in ("-f", "--values"):
            merge(merged, yaml.safe_load(Path(value).read_text()) or {})
    for flag, value in pairs:
        if flag == "--set":
            merge(merged, helm_python.parse_set_string(value))
    for flag, value in pairs:
        if flag == "--set-string":
            merge(merged, helm_python.parse_set_string_values(value))
    return merged


def merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def render_core(umbrella: Path, supplied: dict[str, Any], namespace: str) -> dict[str, str]:
    """mlobs-core as the umbrella deploys it: its packaged archive, the umbrella's values, the flags."""
    import helm_python
    import yaml

    [archive] = (umbrella / "charts").glob("mlobs-core-*.tgz")
    values = (yaml.safe_load((umbrella / "values.yaml").read_text()) or {}).get("mlobs-core", {})
    merge(values, supplied.get("mlobs-core", {}))
    out: dict[str, str] = helm_python.Chart.load(archive).render(
        values, name="mlobs", namespace=namespace, is_install=True
    )
    return out


def helm(world: dict[str, Any], args: list[str]) -> Answer:  # noqa: PLR0911 - one answer per modelled call
    match args[:2]:
        case ["version", "--short"]:
            return Answer(0, world["versions"]["helm"] + "\n")
        case ["dependency", "list"]:
            chart = Path(args[2])
            rows = [
                f"{d['name']}\t{d['version']}\t{d['repository']}\t{dependency_status(chart, d)}"
                for d in chart_dependencies(chart)
            ]
            return Answer(0, "NAME\tVERSION\tREPOSITORY\tSTATUS\n" + "\n".join(rows) + "\n\n")
        case ["repo", "add"]:
            return Answer(0, f'"{args[2]}" has been added to your repositories\n')
        case ["dependency", "update"]:
            import helm_python

            chart = Path(args[2])
            (chart / "charts").mkdir(exist_ok=True)
            for dep in chart_dependencies(chart):
                if dep["repository"].startswith("file://"):
                    helm_python.package(
                        chart / dep["repository"][len("file://") :], destination=chart / "charts"
                    )
                else:  # the real one downloads it: a placeholder of the same name
                    (chart / "charts" / f"{dep['name']}-{dep['version']}.tgz").write_bytes(b"placeholder")
            (chart / "Chart.lock").write_text("dependencies: []\ndigest: sha256:0\ngenerated: now\n")
            return Answer(0, "Saving 3 charts\n")
        case ["package", chart_dir]:
            import helm_python

            helm_python.package(chart_dir, destination=option(args, "--destination"))
            return Answer(0, "Successfully packaged chart\n")
        case ["upgrade", "--install"]:
            return upgrade(world, args)
        case ["get", "values"]:
            release = world["release"]
            if release is None:
                return Answer(1, err="Error: release: not found\n")
            import yaml

            return Answer(0, yaml.safe_dump(release["values"]))
        case ["template", _]:
            chart, shown = Path(args[2]), option(args, "--show-only") or ""
            prefix = "charts/mlobs-core/"
            rendered = render_core(chart, values_of(args), option(args, "--namespace") or "default")
            return Answer(0, rendered[f"mlobs-core/{shown[len(prefix) :]}"])
    raise not_modelled("helm", args)


def upgrade(world: dict[str, Any], args: list[str]) -> Answer:
    import yaml

    chart, context = Path(args[3]), option(args, "--kube-context")
    if context not in world["contexts"]:
        return Answer(1, err=f'Error: context "{context}" does not exist\n')
    missing = [d["name"] for d in chart_dependencies(chart) if dependency_status(chart, d) != "ok"]
    if missing:
        return Answer(
            1, err=f"Error: found in Chart.yaml, but missing in charts/ directory: {', '.join(missing)}\n"
        )
    supplied = values_of(args)
    rendered = render_core(chart, supplied, option(args, "--namespace") or "default")
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    workloads = {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    }
    world["service_names"] = {
        f"StatefulSet/{d['metadata']['name']}": d["spec"]["serviceName"]
        for d in docs
        if d["kind"] == "StatefulSet"
    }
    for name, template in workloads.items():
        if name in world["workloads"] and world["workloads"][name] != template:
            world["rollouts"].append(name)
    world["workloads"] = workloads
    world["rule_groups"] = [
        g["name"] for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]
    ]
    revision = 1 if world["release"] is None else world["release"]["revision"] + 1
    world["release"] = {"revision": revision, "values": supplied}
    return Answer(0, f'Release "{args[2]}" has been upgraded. Happy Helming!\n')


# ---- kubectl and curl -------------------------------------------------------------------------------


def kubectl(world: dict[str, Any], args: list[str]) -> Answer:  # noqa: PLR0911 - one answer per modelled call
    if args == ["version", "--client"]:
        return Answer(0, world["versions"]["kubectl"] + "\n")
    if args == ["config", "get-contexts", "-o", "name"]:
        return Answer(0, "".join(f"{c}\n" for c in world["contexts"]))
    context = option(args, "--context")
    if context not in world["contexts"]:
        return Answer(1, err=f'error: context "{context}" does not exist\n')
    rest = without_options(args, "--context", "--namespace", "--request-timeout")
    deployed = world["release"] is not None
    match rest:
        case ["get", "statefulset", name, "-o", "name"]:
            if deployed and ready(world, f"statefulset:{name}"):
                return Answer(0, f"statefulset.apps/{name}\n")
            return Answer(1, err=f'Error from server (NotFound): statefulsets.apps "{name}" not found\n')
        case ["get", "statefulset", name, "-o", "jsonpath={.spec.serviceName}"]:
            service = world.get("service_names", {}).get(f"StatefulSet/{name}")
            if service is None:
                return Answer(1, err=f'Error from server (NotFound): statefulsets.apps "{name}" not found\n')
            return Answer(0, service)
        case ["delete", "statefulset", name, "--cascade=orphan"]:
            world["workloads"].pop(f"StatefulSet/{name}", None)
            world["service_names"].pop(f"StatefulSet/{name}", None)
            world["orphaned"] = [*world.get("orphaned", []), name]
            return Answer(0, f'statefulset.apps "{name}" deleted\n')
        case ["rollout", "status", workload, "--timeout", _]:
            return Answer(0, f"statefulset rolling update complete 1 pods at revision {workload}-1...\n")
        case ["get", "namespace", _] if deployed:
            return Answer(0, "namespace/mlobs\n")
        case ["get", "secret", name, "-o", "jsonpath={.data.admin-password}"] if deployed:
            return Answer(0, base64.b64encode(f"password-of-{name}".encode()).decode())
        case ["create", "-f", "-"]:
            import yaml

            created = []
            for doc in yaml.safe_load_all(sys.stdin.read()):
                if doc and doc["kind"] == "Job":
                    name = doc["metadata"]["name"]
                    if name in world["jobs"]:
                        return Answer(
                            1, err=f'Error from server (AlreadyExists): jobs.batch "{name}" already exists\n'
                        )
                    world["jobs"].append(name)
                    [container] = doc["spec"]["template"]["spec"]["containers"]
                    world["job_images"][name] = container["image"]
                    created.append(f"job.batch/{name} created\n")
            return Answer(0, "".join(created))
        case ["wait", *_]:
            jobs = [a.split("/", 1)[1] for a in rest if a.startswith("job/")]
            unknown = [j for j in jobs if j not in world["jobs"]]
            return Answer(1, err=f"error: jobs {unknown} not found\n") if unknown else Answer(0)
    raise not_modelled("kubectl", args)


def curl(world: dict[str, Any], args: list[str]) -> Answer:
    url = args[-1]
    ports = {p: int(c) for cluster in world["clusters"].values() for c, p in cluster["ports"].items()}
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    container = ports.get(int(host_port.rsplit(":", 1)[1]))
    refused = Answer(7, err=f"curl: (7) Failed to connect to {host_port}: Connection refused\n")
    if container is None or world["release"] is None:
        return refused
    if container == 30090 and url.endswith("/api/v1/rules"):
        groups = world["rule_groups"] if ready(world, "rules") else []
        data = {
            "groups": [{"name": g, "file": f"/etc/prometheus/rules/{g}.yaml", "rules": []} for g in groups]
        }
        return Answer(0, json.dumps({"status": "success", "data": data}, separators=(",", ":")))
    if container == 30300 and url.endswith("/api/health"):
        if not ready(world, "grafana"):
            return Answer(22, err="curl: (22) The requested URL returned error: 503\n")
        return Answer(0, '{\n  "commit": "0000000",\n  "database": "ok"\n}')
    return refused


TOOLS = {"docker": docker, "kind": kind, "helm": helm, "kubectl": kubectl, "curl": curl}


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["MLOBS_STANDIN_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps([tool, *args]) + "\n")
    world_path = Path(os.environ["MLOBS_STANDIN_WORLD"])
    before = world_path.read_text()
    world = json.loads(before)
    try:
        answer = TOOLS[tool](world, args)
    except Answer as raised:
        answer = raised
    after = json.dumps(world, indent=1)
    if after != before:
        tmp = world_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(after)
        tmp.replace(world_path)
    sys.stdout.write(answer.out)
    sys.stderr.write(answer.err)
    return answer.code


if __name__ == "__main__":
    sys.exit(main())
