"""docs/deploy/: the Kubernetes manifests and the Collector config that
docs/deployment.md relies on parse, and agree with each other, with the
host's snakepit.toml and with the worker's command line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "docs/deploy"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def by_kind(items: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in items}


def host() -> dict:
    return tomllib.loads((DEPLOY / "snakepit.toml").read_text())


def test_the_headless_service_is_the_name_the_host_resolves():
    k = by_kind(docs("workers.yaml"))
    service, deployment = k["Service"], k["Deployment"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    (port,) = service["spec"]["ports"]
    address = host()["pool"]["external_workers"][0]["address"]
    name, dns_port = address.removeprefix("dns:").rsplit(":", 1)
    meta = service["metadata"]
    assert name.startswith(f"{meta['name']}.{meta['namespace']}.svc"), name
    assert int(dns_port) == port["port"]


def test_the_worker_command_is_one_the_worker_accepts():
    from snakepit_bridge.worker.cli import parse_args

    k = by_kind(docs("workers.yaml"))
    (container,) = k["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "snakepit_bridge.worker"]
    opts = parse_args(command[3:])
    assert opts.listen == "0.0.0.0:50051"
    port = int(opts.listen.rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    # The token comes from the secret, never from the command line.
    assert "--token" not in command
    env = {e["name"]: e for e in container["env"]}
    token_ref = env["SNAKEPIT_TOKEN"]["valueFrom"]["secretKeyRef"]
    secrets = {d["metadata"]["name"]: d for d in docs("secrets.yaml")}
    assert token_ref["key"] in secrets[token_ref["name"]]["stringData"]
    # The TLS files are mounted from the TLS secret.
    mount = container["volumeMounts"][0]
    volume = k["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume["name"] == mount["name"]
    tls = secrets[volume["secret"]["secretName"]]
    assert tls["type"] == "kubernetes.io/tls"
    for flag in ("--tls-cert", "--tls-key"):
        path = command[command.index(flag) + 1]
        assert path.startswith(mount["mountPath"] + "/")
        assert path.rsplit("/", 1)[1] in tls["data"]


def test_the_collector_receives_what_the_host_sends():
    c = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    endpoint = c["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    sent_to = urlparse(host()["opentelemetry"]["exporters"]["otlp"]["endpoint"])
    assert int(endpoint.rsplit(":", 1)[1]) == sent_to.port
    traces = c["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"]
    for stage in ("processors", "exporters"):
        for name in traces[stage]:
            assert name in c[stage], name


def test_prometheus_scrapes_the_hosts_listener():
    p = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = p["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    listen = next(s["listen"] for s in host()["sinks"] if s["kind"] == "prometheus")
    assert target.rsplit(":", 1)[1] == listen.rsplit(":", 1)[1]
