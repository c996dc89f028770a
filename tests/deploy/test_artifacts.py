"""Offline checks of the deployment artifacts: deploy/docker, deploy/compose.yaml and
the Helm chart deploy/helm/streamkm (docs/deploy.md).

There is no Docker daemon, no helm and no cluster here, so nothing is built, started
or installed. Instead the artifacts are parsed and cross-checked against the code
they deploy:

- the Dockerfile: a numeric non-root user, the HEALTHCHECK script (run against a real
  :class:`~streamkm.ops.http.HealthServer`, its address resolution compared with the
  settings loader), EXPOSE = the metrics port, the config file it names loads, the
  ignore rules send what ``pip install .`` needs, and the wheel built from that
  context holds every file of the package;
- the compose file: valid against the Compose Specification's JSON schema (vendored
  as compose-spec.json, from compose-spec/compose-spec, Apache-2.0), the Kafka KRaft
  settings agree with each other, every worker variable is a real settings key and
  the result loads, the producer's command parses with the real CLI and matches the
  workers, Prometheus loads the shipped rules (promtool, when installed) and scrapes
  the workers' metrics port, Grafana's provisioning points at files that exist and
  its data source uid is the one the dashboards select;
- the chart, rendered by tests/deploy/minihelm.py (the subset of Helm's template
  language the chart keeps to) with default values and variations: every manifest
  validates against the Kubernetes JSON schemas (kubernetes-validate, strict, the
  chart's minimum Kubernetes version and the newest one it ships), the ConfigMap's
  TOML loads with the real settings loader, and ports, probe paths, the
  termination grace period, labels, selectors and the user agree with the code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamkm.cli import build_parser
from streamkm.config import CONFIG_ENV_VAR, MetricsSettings, Settings, load_settings
from streamkm.ops.http import HealthServer
from tests.deploy import minihelm
from tests.deploy.parsing import (
    Instruction,
    command_args,
    dockerignore_excludes,
    env_to_key,
    host_path,
    load_compose,
    mounts,
    parse_dockerfile,
    settings_key_exists,
)
from tests.helpers.prometheus import require_prometheus_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "streamkm"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")

WILDCARD_HOSTS = {"0.0.0.0", "::"}
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                      "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")


# =========================================================== shared helpers
def _instructions(name: str) -> list[Instruction]:
    return [i for i in parse_dockerfile(DOCKERFILE.read_text()) if i.name == name]


def _one(name: str) -> Instruction:
    found = _instructions(name)
    assert len(found) == 1, f"expected one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in _instructions("ENV"):
        for item in ins.args.split():
            key, sep, value = item.partition("=")
            assert sep, f"line {ins.line}: use ENV KEY=VALUE, got {item!r}"
            env[key] = value
    return env


def _copies() -> dict[str, str]:
    """Image path -> build-context path of every COPY."""
    out = {}
    for ins in _instructions("COPY"):
        assert "from" not in ins.flags, ins
        *sources, dest = ins.args.split()
        assert len(sources) == 1, f"line {ins.line}: one source per COPY"
        out[dest] = sources[0]
    return out


def _image_file(image_path: str) -> Path:
    """The repository file that the Dockerfile COPYs to *image_path*."""
    copies = _copies()
    assert image_path in copies, f"{image_path} is not COPYed into the image ({sorted(copies)})"
    return ROOT / copies[image_path]


def _image_uid() -> int:
    user = _instructions("USER")[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER must be numeric (runAsNonRoot can only verify a numeric user), got {user!r}"
    return int(uid)


def _image_settings(env: dict[str, str] | None = None) -> Settings:
    """The settings a container of the image gets: its config file plus *env*."""
    config = _image_file(_dockerfile_env()[CONFIG_ENV_VAR])
    return load_settings(config, env=dict(env or {}))


def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("streamkm_image_healthcheck", DOCKER / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def _health_server(**kwargs: Any) -> AsyncIterator[HealthServer]:
    from prometheus_client import CollectorRegistry

    async with HealthServer(CollectorRegistry(), host="127.0.0.1", port=0, **kwargs) as server:
        yield server


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def _route_statuses(paths: list[str], *, ready: bool) -> dict[str, int]:
    async with _health_server(ready=lambda: ready) as server:
        return {p: await asyncio.to_thread(_http_status, server.url + p) for p in paths}


@functools.cache
def _server_routes() -> tuple[dict[str, int], dict[str, int]]:
    """HTTP status of the probe paths (and a control) on a real HealthServer: not ready, ready."""
    paths = ["/healthz", "/readyz", "/metrics", "/no-such-route"]
    return asyncio.run(_route_statuses(paths, ready=False)), asyncio.run(_route_statuses(paths, ready=True))


# ================================================================ Dockerfile
def test_dockerfile_base_is_a_slim_python_at_the_supported_version():
    from_ = _one("FROM").args
    default = {i.args.split("=", 1)[0]: i.args.split("=", 1)[1] for i in _instructions("ARG") if "=" in i.args}
    image = re.sub(r"\$\{(\w+)\}", lambda m: default[m.group(1)], from_)
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", image)
    assert m, f"expected a python:X.Y-slim base image, got {image!r}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=(\d+)\.(\d+)", requires)
    assert floor, requires
    assert (int(m.group(1)), int(m.group(2))) >= (int(floor.group(1)), int(floor.group(2)))


def test_dockerfile_runs_as_a_numeric_non_root_user_it_creates():
    uid = _image_uid()
    assert uid != 0
    (run,) = [i for i in _instructions("RUN") if "useradd" in i.args]
    assert re.search(rf"useradd\b.*--uid {uid}\b", run.args), "the USER's uid is not the one useradd creates"
    # everything after USER runs unprivileged: no RUN after it that would need root
    names = [i.name for i in parse_dockerfile(DOCKERFILE.read_text())]
    assert "RUN" not in names[names.index("USER"):]


def test_dockerfile_installs_the_project_from_the_context_without_torch():
    runs = _instructions("RUN")
    (install,) = [i for i in runs if "pip install" in i.args]
    assert re.search(r"pip install \.(\s|$)", install.args), "expected 'pip install .' (no extras)"
    # the context is bind-mounted at the WORKDIR where pip runs
    assert install.flags.get("mount", "").startswith("type=bind"), install.flags
    target_flag = re.search(r"target=([^,]+)", install.flags["mount"])
    assert target_flag, install.flags
    target = target_flag.group(1)
    workdirs = [i for i in parse_dockerfile(DOCKERFILE.read_text()) if i.name == "WORKDIR" and i.line < install.line]
    assert workdirs and workdirs[-1].args == target
    text = " ".join(i.args for i in runs).lower()
    assert "torch" not in text and "[" not in install.args, "the image must not install extras (torch)"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith("torch") for d in deps), "torch became a runtime dependency"


def test_dockerfile_config_file_and_state_volume():
    env = _dockerfile_env()
    settings = _image_settings()  # the file the image names loads, with no environment
    assert settings.metrics.host in WILDCARD_HOSTS, "in a container the metrics server must listen on all interfaces"
    volumes = _one("VOLUME").exec_form()
    assert volumes, "VOLUME must use the JSON form"
    assert any(Path(settings.checkpoint.dir).is_relative_to(v) for v in volumes), \
        f"checkpoint.dir {settings.checkpoint.dir} is not on a VOLUME {volumes}"
    assert Path(env[CONFIG_ENV_VAR]).parent.as_posix() == "/etc/streamkm"
    # the image sets no STREAMKM_* variable besides the config path: they would win over a mounted file
    assert [k for k in env if k.startswith("STREAMKM_")] == [CONFIG_ENV_VAR]
    # given brokers, the group model (the default) also needs the width, as the file's comment says
    brokers = {"STREAMKM_KAFKA__BOOTSTRAP_SERVERS": "kafka-1:9092"}
    assert [k for k, _ in _image_settings(brokers).run_problems()] == ["input.dimension"]
    assert not _image_settings({**brokers, "STREAMKM_INPUT__DIMENSION": "8"}).run_problems()


def test_dockerfile_exposes_the_metrics_port_and_checks_healthz():
    port = _image_settings().metrics.port
    assert _one("EXPOSE").args.split() == [f"{port}"]
    assert port == MetricsSettings().port
    hc = _one("HEALTHCHECK")
    cmd = hc.args
    assert cmd.startswith("CMD "), "HEALTHCHECK must be CMD (not NONE)"
    argv = Instruction("CMD", {}, cmd[4:], hc.line).exec_form()
    assert argv is not None and argv[0] == "python", argv
    script = _image_file(argv[1])
    assert script == DOCKER / "healthcheck.py"
    module = _load_healthcheck()
    assert module.DEFAULT_PORT == MetricsSettings().port and module.DEFAULT_HOST == MetricsSettings().host
    # it times out before Docker does
    timeout = float(hc.flags["timeout"].rstrip("s"))
    assert module.TIMEOUT_SECONDS < timeout


def test_dockerfile_entrypoint_runs_the_daemon():
    entry = _one("ENTRYPOINT").exec_form()
    cmd = _one("CMD").exec_form()
    assert entry == ["streamkm"] and cmd == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "streamkm" in scripts
    args = build_parser().parse_args(cmd)
    assert args.command == "run" and args.config is None  # the config comes from $STREAMKM_CONFIG
    assert _one("STOPSIGNAL").args == "SIGTERM"


# The configurations the HEALTHCHECK must resolve like the settings loader.
_HEALTHCHECK_CASES = {
    "image-defaults": ({}, None),
    "env-port": ({"STREAMKM_METRICS__PORT": "9200"}, None),
    "lower-case-env": ({"streamkm_metrics__port": "9201"}, None),
    "file-port-host": ({}, '[metrics]\nport = 9300\nhost = "127.0.0.2"\n'),
    "env-over-file": ({"STREAMKM_METRICS__PORT": "9400"}, "[metrics]\nport = 9300\n"),
    "file-without-metrics": ({}, "[model]\nn_clusters = 3\n"),
    "ipv6-wildcard": ({"STREAMKM_METRICS__HOST": "::"}, None),
    "disabled": ({"STREAMKM_METRICS__ENABLED": "false"}, None),
}


@pytest.mark.parametrize("case", list(_HEALTHCHECK_CASES))
def test_healthcheck_resolves_the_address_like_the_settings_loader(case, tmp_path):
    env, file_text = _HEALTHCHECK_CASES[case]
    env = dict(env)
    if file_text is None:
        env[CONFIG_ENV_VAR] = str(_image_file(_dockerfile_env()[CONFIG_ENV_VAR]))
    else:
        (tmp_path / "streamkm.toml").write_text(file_text)
        env[CONFIG_ENV_VAR] = str(tmp_path / "streamkm.toml")
    metrics = load_settings(env=env).metrics
    host, port, enabled = _load_healthcheck().metrics_address(env)
    assert (port, enabled) == (metrics.port, metrics.enabled)
    expected_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(metrics.host, metrics.host)
    assert host == expected_host


def _run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMKM_")}
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_script_against_a_live_health_server():
    async def main() -> dict[str, int]:
        codes = {}
        async with _health_server(ready=lambda: False) as server:
            env = {"STREAMKM_METRICS__PORT": str(server.port), "STREAMKM_METRICS__HOST": "0.0.0.0"}
            codes["live, not ready"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
            codes["disabled"] = (await asyncio.to_thread(
                _run_healthcheck, {**env, "STREAMKM_METRICS__ENABLED": "false"})).returncode
        async with _health_server(live=lambda: False) as server:
            env = {"STREAMKM_METRICS__PORT": str(server.port)}
            codes["not live"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
        codes["stopped"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
        return codes

    # liveness only: a worker that is not ready (no partitions, broker away) is healthy
    assert asyncio.run(main()) == {"live, not ready": 0, "disabled": 1, "not live": 1, "stopped": 1}


@functools.cache
def _context_files() -> tuple[str, ...]:
    """The files the build context sends (relative paths), per Dockerfile.dockerignore.

    Excluded directories that no ``!`` rule reaches into are not walked (.venv, caches).
    """
    rules = DOCKERIGNORE.read_text()
    negations = [line.strip()[1:] for line in rules.splitlines() if line.strip().startswith("!")]
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(
            d for d in dirnames
            if not dockerignore_excludes(rules, prefix + d)
            or any(n.startswith(prefix + d + "/") or not n[:1].isalnum() for n in negations))
        out += [prefix + f for f in sorted(filenames) if not dockerignore_excludes(rules, prefix + f)]
    return tuple(sorted(out))


def test_dockerignore_sends_what_the_build_needs_and_little_else():
    files = _context_files()
    needed = {"pyproject.toml", "README.md", *(_copies().values())}
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "streamkm").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert needed | package <= set(files), sorted((needed | package) - set(files))
    unexpected = [f for f in files if f not in needed | package]
    assert not unexpected, f"sent to the build but unused: {unexpected}"
    assert dockerignore_excludes(DOCKERIGNORE.read_text(), ".git/HEAD")


def test_wheel_from_the_build_context_holds_every_package_file(tmp_path):
    """``pip install .`` in the image installs a wheel: data files must be in it too."""
    pytest.importorskip("setuptools", reason="builds the wheel without build isolation (no network)")
    ctx = tmp_path / "context"
    for rel in _context_files():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(tmp_path / "dist"), str(ctx)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("streamkm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = sorted(p.relative_to(ctx).as_posix() for p in (ctx / "streamkm").rglob("*") if p.is_file())
    missing = [p for p in package if p not in names]
    assert not missing, (f"not in the wheel, so missing from the image: {missing} "
                         "(declare them in [tool.setuptools.package-data] in pyproject.toml)")


# ============================================================ compose file
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _services(compose).items() if re.fullmatch(r"worker-\d+", n)}


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def _worker_settings(service: dict[str, Any]) -> Settings:
    return _image_settings(_env(service))


def _kafka_topics(compose: dict[str, Any]) -> dict[str, int]:
    """Topics the kafka-init service creates -> partitions."""
    init = _services(compose)["kafka-init"]
    script = " ".join(command_args(init["command"]))
    return {t: int(n) for t, n in re.findall(r"--topic (\S+) --partitions (\d+)", script)}


def _duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    assert m and text, f"unsupported duration {text!r}"
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def test_compose_file_matches_the_compose_specification(compose):
    schema = yaml.safe_load(COMPOSE_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    # the validator is not vacuous: a misspelled key is an error
    broken = {**compose, "services": {**compose["services"], "kafka": {**compose["services"]["kafka"],
                                                                        "healthchek": {}}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_compose_services_and_images(compose):
    services = _services(compose)
    assert set(_workers(compose)) == {"worker-1", "worker-2", "worker-3"}
    assert {"kafka", "kafka-init", "producer", "prometheus", "grafana"} <= set(services)
    for name, s in services.items():
        image = s["image"]
        assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: pin a tag ({image})"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name in [*_workers(compose), "producer"]:
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    for name, s in services.items():  # nothing published beyond the host
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish on 127.0.0.1 only ({port})"


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        m = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", item.strip())
        assert m, f"listener {item!r}"
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


def test_kafka_is_a_consistent_single_node_kraft_combined_setup(compose):
    kafka = _services(compose)["kafka"]
    env = _env(kafka)
    node_id = int(env["KAFKA_NODE_ID"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controllers = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    (voter,) = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    m = re.fullmatch(r"(\d+)@([\w.-]+):(\d+)", voter)
    assert m, voter
    assert int(m.group(1)) == node_id, "the only voter must be this node"
    assert m.group(2) in (kafka.get("hostname"), "kafka", "localhost")
    assert set(controllers) <= set(listeners) and not set(controllers) & set(advertised)
    assert int(m.group(3)) in {listeners[c][1] for c in controllers}
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name}: advertised port {port} is not the one it listens on"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", f"{key}: one node"
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID: a base64url UUID (16 bytes)"
    # the host listener is the published port
    published = {int(str(p).split(":")[-1]) for p in kafka.get("ports", [])}
    host_listeners = {port for host, port in advertised.values() if host == "localhost"}
    assert published == host_listeners
    log_dirs = env["KAFKA_LOG_DIRS"]
    assert any(m.target == log_dirs and m.host is None for m in mounts(COMPOSE.parent, kafka)), \
        "the log directory must be on a named volume"
    hc = kafka["healthcheck"]["test"]
    assert any(f"localhost:{listeners[env['KAFKA_INTER_BROKER_LISTENER_NAME']][1]}" in part for part in hc)


def test_worker_environment_is_real_settings_keys_and_loads(compose):
    workers = _workers(compose)
    services = _services(compose)
    advertised = _listeners(_env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    internal = {f"{host}:{port}" for host, port in advertised.values() if host == "kafka"}
    topics = _kafka_topics(compose)
    loaded = {}
    for name, service in workers.items():
        env = _env(service)
        for key in env:
            assert key.startswith("STREAMKM_") and key != CONFIG_ENV_VAR, f"{name}: {key}"
            # the loader ignores unknown top-level names, so check every key here
            assert settings_key_exists(Settings, env_to_key(key)), f"{name}: {key} is not a setting"
        settings = _worker_settings(service)
        loaded[name] = settings
        assert settings.kafka.bootstrap_servers in internal
        assert settings.group.enabled, "the compose workers run the group model"
        assert not settings.run_problems(), f"{name}: 'streamkm run' refuses {settings.run_problems()}"
        assert settings.metrics.host in WILDCARD_HOSTS
        assert settings.kafka.vectors_topic in topics and topics[settings.kafka.vectors_topic] >= len(workers)
        for t in (settings.dlq.topic, settings.output.topic):
            assert t is None or t in topics, f"{name}: topic {t} is not created"
        grace = _duration_seconds(service["stop_grace_period"])
        assert grace > settings.worker.shutdown_deadline_seconds
        assert not service.get("healthcheck", {}).get("disable", False), "workers keep the image's HEALTHCHECK"
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert len({s.kafka.group_id for s in loaded.values()}) == 1, "one consumer group"
    assert len({s.kafka.client_id for s in loaded.values()}) == len(loaded), "distinct client ids"
    for name, service in workers.items():  # per-worker mode (group.enabled false) has its volume
        (state,) = [m for m in mounts(COMPOSE.parent, service) if m.host is None]
        assert Path(loaded[name].checkpoint.dir).is_relative_to(state.target)


def test_producer_command_parses_and_feeds_the_workers(compose):
    services = _services(compose)
    producer = services["producer"]
    args = build_parser().parse_args(command_args(producer["command"]))
    assert args.command == "produce" and args.file is None and args.count is None
    settings = _worker_settings(services["worker-1"])
    assert args.bootstrap == settings.kafka.bootstrap_servers
    assert args.topic == settings.kafka.vectors_topic
    assert args.features == settings.input.dimension, "the producer's width must be the workers' input.dimension"
    assert args.clusters == settings.model.n_clusters
    # `streamkm produce` serves no /healthz: the image's HEALTHCHECK must be off for it
    assert producer["healthcheck"] == {"disable": True}


def _prometheus_config(compose: dict[str, Any]) -> tuple[dict[str, Any], Path, str]:
    prom = _services(compose)["prometheus"]
    (flag,) = [a for a in command_args(prom["command"]) if a.startswith("--config.file=")]
    container_path = flag.split("=", 1)[1]
    path = host_path(COMPOSE.parent, prom, container_path)
    assert path is not None and path.is_file(), f"{container_path} is not mounted from a file"
    return yaml.safe_load(path.read_text()), path, container_path


def test_prometheus_loads_the_shipped_rules_and_scrapes_the_workers(compose):
    prom = _services(compose)["prometheus"]
    config, _, container_path = _prometheus_config(compose)
    config_dir = str(Path(container_path).parent)
    referenced = set()
    for rule_file in config["rule_files"]:
        container_rule = rule_file if rule_file.startswith("/") else f"{config_dir}/{rule_file}"
        path = host_path(COMPOSE.parent, prom, container_rule)
        assert path is not None and path.is_file(), f"rule file {rule_file} is not mounted"
        referenced.add(path.resolve())
    shipped = {p.resolve() for p in (DEPLOY / "prometheus").glob("*.y*ml")
               if isinstance(d := yaml.safe_load(p.read_text()), dict) and "groups" in d}
    assert shipped and referenced == shipped, "the compose Prometheus must load every shipped rules file"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    used = set()
    for p in shipped:
        used |= set(re.findall(r'job="([^"]+)"', p.read_text()))
    assert used <= set(jobs), f"rules select jobs {used - set(jobs)} that are not scraped"
    targets = {t for sc in jobs["streamkm"]["static_configs"] for t in sc["targets"]}
    expected = {f"{name}:{_worker_settings(s).metrics.port}" for name, s in _workers(compose).items()}
    assert targets == expected
    assert all(_workers(compose)[name].get("hostname") == name for name in _workers(compose))


def test_promtool_checks_the_compose_prometheus_config(compose, tmp_path):
    """``promtool check config`` on the files laid out as the container sees them."""
    promtool = require_prometheus_binary("promtool")
    prom = _services(compose)["prometheus"]
    _, _, container_path = _prometheus_config(compose)
    root = tmp_path / "root"
    for m in mounts(COMPOSE.parent, prom):
        if m.host is None:
            continue
        dest = root / m.target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(m.host)
    out = subprocess.run([promtool, "check", "config", str(root / container_path.lstrip("/"))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr and "rules" in out.stdout + out.stderr


def _grafana_files(compose: dict[str, Any], kind: str) -> list[tuple[str, Path]]:
    grafana = _services(compose)["grafana"]
    out = []
    for m in mounts(COMPOSE.parent, grafana):
        if m.target.startswith(f"/etc/grafana/provisioning/{kind}/"):
            assert m.host is not None and m.host.is_file(), f"{m.source} does not exist"
            out.append((m.target, m.host))
    assert out, f"no {kind} provisioning mounted"
    return out


_VAR_REF = re.compile(r"^\$\{?(\w+)(?::\w+)?\}?$|^\[\[(\w+)\]\]$")


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


def _check_dashboard_datasources(dashboard: dict[str, Any], ds: dict[str, Any]) -> int:
    """Every data source reference in *dashboard* resolves to *ds*; the count of references."""
    assert "__inputs" not in dashboard, "file provisioning does not fill in __inputs (${DS_...}): use a variable"
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds_vars = {n: v for n, v in variables.items() if v.get("type") == "datasource"}
    refs = [*_datasource_refs(dashboard.get("panels", [])), *_datasource_refs(dashboard.get("annotations", {})),
            *(v.get("datasource") for v in variables.values() if v.get("type") == "query")]
    resolved = 0
    for ref in refs:
        if ref is None:
            continue
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        kind = ref.get("type") if isinstance(ref, dict) else None
        if uid in (None, "-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"):
            continue
        m = _VAR_REF.match(str(uid))
        if m:
            name = m.group(1) or m.group(2)
            assert name in ds_vars, f"${name} is not a datasource variable"
            var = ds_vars[name]
            assert var.get("query") == ds["type"], f"${name} lists {var.get('query')} data sources"
            if var.get("regex"):
                assert re.search(var["regex"], ds["name"]), f"${name}'s regex hides {ds['name']}"
            current = (var.get("current") or {}).get("value")
            assert current in (None, "", ds["uid"], ds["name"], "default"), f"${name} defaults to {current}"
            assert ds.get("isDefault"), "the variable has no current value, so the default data source is used"
        else:
            assert uid in (ds["uid"], ds["name"]), f"a panel names data source {uid!r}, provisioned is {ds['uid']!r}"
        if kind is not None:
            assert kind == ds["type"]
        resolved += 1
    return resolved


def test_grafana_provisioning_points_at_existing_files_with_a_fixed_uid(compose):
    grafana = _services(compose)["grafana"]
    datasources = [d for _, p in _grafana_files(compose, "datasources")
                   for d in yaml.safe_load(p.read_text())["datasources"]]
    (ds,) = datasources
    assert ds["uid"] and ds["type"] == "prometheus" and ds["isDefault"]
    m = re.fullmatch(r"http://([\w-]+):(\d+)", ds["url"])
    assert m and m.group(1) == "prometheus" and m.group(1) in _services(compose)
    prom_args = command_args(_services(compose)["prometheus"]["command"])
    listen = [a for a in prom_args if a.startswith("--web.listen-address=")]
    assert int(m.group(2)) == (int(listen[0].rsplit(":", 1)[1]) if listen else 9090)
    config, _, _ = _prometheus_config(compose)
    assert ds["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]

    dashboards: list[Path] = []
    for _, provider_file in _grafana_files(compose, "dashboards"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert provider["type"] == "file"
            folder = host_path(COMPOSE.parent, grafana, provider["options"]["path"])
            assert folder is not None and folder.is_dir(), provider["options"]["path"]
            dashboards += sorted(folder.rglob("*.json"))
    assert DEPLOY / "grafana" / "streamkm.json" in dashboards
    for path in dashboards:
        dashboard = yaml.safe_load(path.read_text())
        assert _check_dashboard_datasources(dashboard, ds) > 0, f"{path.name} uses no data source"
    home = _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_file = host_path(COMPOSE.parent, grafana, home)
    assert home_file is not None and home_file.is_file() and home_file in dashboards


def test_dashboard_datasource_check_handles_fixed_uids_and_variables():
    ds = {"name": "Prometheus", "uid": "streamkm-prometheus", "type": "prometheus", "isDefault": True}
    fixed = {"panels": [{"datasource": {"type": "prometheus", "uid": "streamkm-prometheus"}}]}
    assert _check_dashboard_datasources(fixed, ds) == 1
    variable = {"templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
                "panels": [{"datasource": {"type": "prometheus", "uid": "${datasource}"}}]}
    assert _check_dashboard_datasources(variable, ds) == 1
    for bad in ({"panels": [{"datasource": {"uid": "other"}}]},
                {"panels": [{"datasource": {"uid": "$ds"}}]},
                {"__inputs": [{"name": "DS_PROMETHEUS"}], "panels": []}):
        with pytest.raises(AssertionError):
            _check_dashboard_datasources(bad, ds)


# =================================================================== the chart
VARIATIONS: dict[str, list[dict[str, Any]]] = {
    "defaults": [],
    # one model per worker: a StatefulSet with a claim per pod
    "per-worker": [{"config": {"group": {"enabled": False}, "input": {"dimension": None}},
                    "persistence": {"storageClassName": "fast-ssd", "size": "5Gi"}}],
    # the optional parts switched on, another port, a secret from the environment
    "monitored": [{"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "podDisruptionBudget": {"maxUnavailable": "50%"},
                   "image": {"repository": "registry.example.com/streamkm", "tag": "0.1.0-rc1"},
                   "config": {"metrics": {"port": 9200}, "output": {"topic": "streamkm.assignments"},
                              "model": {"n_clusters": 12, "half_life": 500.0}},
                   "extraEnv": [{"name": "STREAMKM_KAFKA__SASL_PLAIN_PASSWORD",
                                 "valueFrom": {"secretKeyRef": {"name": "kafka", "key": "password"}}}],
                   "nodeSelector": {"kubernetes.io/arch": "amd64"},
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "streaming",
                                    "effect": "NoSchedule"}],
                   "replicaCount": 6, "terminationGracePeriodSeconds": 75}],
    # the optional parts switched off
    "minimal": [{"podDisruptionBudget": {"enabled": False}, "scrapeAnnotations": False, "replicaCount": 1,
                 "config": {"worker": {"shutdown_deadline_seconds": 60}}, "terminationGracePeriodSeconds": 90}],
}


@pytest.fixture(scope="module")
def chart() -> minihelm.Chart:
    return minihelm.Chart.load(CHART)


@pytest.fixture(scope="module", params=list(VARIATIONS))
def rendered(request, chart) -> dict[str, Any]:
    name = request.param
    text = minihelm.render_chart(chart, VARIATIONS[name], release=f"skm-{name}", namespace="streaming")
    objs = minihelm.manifests(text)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    return {"name": name, "text": text, "objects": objs, "by_kind": by_kind, "release": f"skm-{name}"}


def _only(rendered: dict[str, Any], *kinds: str) -> dict[str, Any]:
    found = [o for k in kinds for o in rendered["by_kind"].get(k, [])]
    assert len(found) == 1, f"expected one of {kinds}, got {[o['kind'] for o in found]}"
    return found[0]


def _workload(rendered: dict[str, Any]) -> dict[str, Any]:
    return _only(rendered, "Deployment", "StatefulSet")


def _container(rendered: dict[str, Any]) -> dict[str, Any]:
    (container,) = _workload(rendered)["spec"]["template"]["spec"]["containers"]
    return container


def _chart_settings(rendered: dict[str, Any], tmp_path: Path) -> Settings:
    """The settings a pod gets: the ConfigMap's TOML at STREAMKM_CONFIG plus the container env."""
    container = _container(rendered)
    env = {e["name"]: e.get("value", "secret-from-valueFrom") for e in container["env"]}
    config_path = env.pop(CONFIG_ENV_VAR)
    pod = _workload(rendered)["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = _only(rendered, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    key = config_path[len(mount["mountPath"]) + 1:]
    toml_text = configmap["data"][key]
    tomllib.loads(toml_text)  # valid TOML
    path = tmp_path / key
    path.write_text(toml_text)
    for name in env:
        assert settings_key_exists(Settings, env_to_key(name)), f"{name} is not a setting"
    return load_settings(path, env=env)


def _kube_versions(chart: minihelm.Chart) -> list[str]:
    floor = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(?:-0)?", chart.meta["kubeVersion"])
    assert floor, chart.meta["kubeVersion"]
    newest = re.match(r"\d+\.\d+", kubernetes_validate.latest_version())
    assert newest
    return [floor.group(1), newest.group(0)]


def test_chart_metadata(chart):
    meta = chart.meta
    assert meta["apiVersion"] == "v2" and meta["name"] == CHART.name and meta["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert meta["appVersion"] == pyproject, "appVersion (the default image tag) must be the package version"
    versions = _kube_versions(chart)
    assert set(versions) <= _shipped_schema_versions(), "kubernetes-validate has no strict schemas for these"


def _shipped_schema_versions() -> set[str]:
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return {re.sub(r"^v(\d+\.\d+).*$", r"\1", p.name) for p in root.iterdir() if p.name.endswith("-local-strict")}


def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered, chart):
    assert rendered["objects"], "nothing rendered"
    for obj in rendered["objects"]:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no schema in kubernetes-validate, checked in test_service_monitor_selects_the_service
        for version in _kube_versions(chart):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                pytest.fail(f"{name} against Kubernetes {version}: {path}: {e.message}")
    kinds = {o["kind"] for o in rendered["objects"]}
    assert {"ConfigMap", "Service"} <= kinds and kinds & {"Deployment", "StatefulSet"}
    assert ("PodDisruptionBudget" in kinds) == (rendered["name"] != "minimal")
    assert ("ServiceMonitor" in kinds) == (rendered["name"] == "monitored")
    assert "<no value>" not in "".join(rendered["text"].values())


def test_rendered_config_loads_with_the_settings_loader(rendered, tmp_path):
    settings = _chart_settings(rendered, tmp_path)
    assert settings.kafka.bootstrap_servers, "the chart never runs the embedded broker"
    assert not settings.run_problems(), f"'streamkm run' refuses {settings.run_problems()}"
    assert settings.metrics.enabled and settings.metrics.host in WILDCARD_HOSTS, "probes reach the pod IP"
    if rendered["name"] == "monitored":  # values reach the settings
        assert (settings.metrics.port, settings.model.n_clusters, settings.model.half_life) == (9200, 12, 500.0)
        assert settings.output.topic == "streamkm.assignments"


def test_workload_kind_and_state_follow_the_group_setting(rendered, tmp_path):
    settings = _chart_settings(rendered, tmp_path)
    workload = _workload(rendered)
    container = _container(rendered)
    mounts_ = {m["name"]: m for m in container["volumeMounts"]}
    if settings.group.enabled:
        assert workload["kind"] == "Deployment", "the group model keeps its state on Kafka"
        assert "volumeClaimTemplates" not in workload["spec"]
    else:
        assert workload["kind"] == "StatefulSet", "per-worker models keep checkpoints on a volume"
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        mount = mounts_[claim["metadata"]["name"]]
        assert Path(settings.checkpoint.dir).is_relative_to(mount["mountPath"]), \
            f"checkpoint.dir {settings.checkpoint.dir} is not on the claim mounted at {mount['mountPath']}"
        headless = _only(rendered, "Service")
        assert workload["spec"]["serviceName"] == headless["metadata"]["name"]
        assert headless["spec"]["clusterIP"] == "None"
        assert claim["spec"]["storageClassName"] == "fast-ssd"
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # a read-only root file system needs a writable /tmp
    security = container["securityContext"]
    if security.get("readOnlyRootFilesystem"):
        pod = workload["spec"]["template"]["spec"]
        (tmp,) = [v for v in pod["volumes"] if v["name"] == mounts_["tmp"]["name"]]
        assert mounts_["tmp"]["mountPath"] == "/tmp" and "emptyDir" in tmp


def test_ports_probes_and_shutdown_agree_with_the_code(rendered, tmp_path):
    settings = _chart_settings(rendered, tmp_path)
    workload = _workload(rendered)
    pod = workload["spec"]["template"]["spec"]
    container = _container(rendered)
    (port,) = container["ports"]
    assert port["name"] == "metrics" and port["containerPort"] == settings.metrics.port
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert probes["startup"]["path"] == probes["liveness"]["path"] == "/healthz"
    assert probes["readiness"]["path"] == "/readyz"
    # the paths are the HTTP server's routes, and liveness does not depend on readiness
    not_ready, ready = _server_routes()
    assert not_ready == {"/healthz": 200, "/readyz": 503, "/metrics": 200, "/no-such-route": 404}
    assert ready["/readyz"] == 200
    assert pod["terminationGracePeriodSeconds"] > settings.worker.shutdown_deadline_seconds, \
        "Kubernetes must not SIGKILL before the worker's shutdown deadline"
    service = _only(rendered, "Service")
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] == "metrics" and sport["port"] == settings.metrics.port
    assert service["spec"]["publishNotReadyAddresses"] is True, "scrape workers that are not ready"
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    if rendered["name"] == "minimal":
        assert not any(k.startswith("prometheus.io/") for k in annotations)
    else:
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(settings.metrics.port)
        assert annotations["prometheus.io/path"] == "/metrics"
    assert build_parser().parse_args(container["args"]).command == "run"
    assert pod["enableServiceLinks"] is False


def test_labels_selectors_and_user(rendered, chart):
    release = rendered["release"]
    workload = _workload(rendered)
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": chart.meta["name"], "app.kubernetes.io/instance": release}
    for obj in rendered["objects"]:
        labels = obj["metadata"]["labels"]
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}: missing {missing}"
        assert labels["app.kubernetes.io/version"] == chart.meta["appVersion"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    template_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert all(k in template_labels for k in RECOMMENDED_LABELS), "pods carry the recommended labels too"
    assert _only(rendered, "Service")["spec"]["selector"] == selector
    for pdb in rendered["by_kind"].get("PodDisruptionBudget", []):
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _image_uid(), "the image's USER"
    image = _container(rendered)["image"]
    expected_tag = "0.1.0-rc1" if rendered["name"] == "monitored" else chart.meta["appVersion"]
    assert image.rsplit(":", 1)[1] == expected_tag


def test_service_monitor_selects_the_service(rendered):
    monitors = rendered["by_kind"].get("ServiceMonitor", [])
    if rendered["name"] != "monitored":
        assert not monitors
        return
    (monitor,) = monitors
    service = _only(rendered, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+[smh]", endpoint["interval"])
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}


def test_config_checksum_rolls_the_pods_when_the_config_changes(chart):
    def checksum(overrides: list[dict[str, Any]]) -> str:
        objs = minihelm.manifests(minihelm.render_chart(chart, overrides))
        (w,) = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
        value: str = w["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum([]) == checksum([{"replicaCount": 5}])
    assert checksum([]) != checksum([{"config": {"model": {"n_clusters": 5}}}])


def test_notes_render(rendered):
    notes = rendered["text"]["templates/NOTES.txt"]
    expected = "one model per worker" if rendered["name"] == "per-worker" else "on the group model"
    assert expected in notes


# ------------------------------------------------------------ the renderer itself
@pytest.mark.parametrize("template", [
    "{{ range .Values.list }}x{{ end }}",
    "{{ with .Values.m }}x{{ end }}",
    "{{ $x := 1 }}",
    '{{ printf "%s" "a" }}',
    '{{ (include "a" .) }}',
    '{{ tpl "x" . }}',
    "{{ if .Values.a }}a{{ else if .Values.b }}b{{ end }}",
    "{{ .Capabilities.KubeVersion.Version }}",
    '{{ .Files.Get "x" }}',
    "{{ .Values.s | upper }}",
    '{{ template "a" . }}',
    "{{-3}}",
    "{{ .Values.s -}}{{ .Values.s-}}",
    "{{ .Values.m }}",
    "{{ .Values.missing }}",
    "{{ .Values.missing.key }}",
    "{{ .Values.s | nindent 4 | quote | nindent }}",
    "{{ if .Values.a }}unterminated",
    "{{ `raw` }}",
    "{{ true }}",
])
def test_renderer_refuses_what_it_does_not_implement(template):
    with pytest.raises(minihelm.TemplateError):
        minihelm.render_string(template, {"s": "x", "m": {"k": 1}, "list": [1], "a": True})


def test_renderer_reproduces_helm_semantics():
    values = {"big": 1000000, "port": 9108, "half": 0.5, "m": {"b": 1, "a": [1, "x"]}, "empty": "", "on": True,
              "cfg": {"s": {"k": 30, "name": "n"}, "top": 1}}

    def r(template: str) -> str:
        return minihelm.render_string(template, values)

    assert r("a\n  {{- \"b\" }}\n c") == "ab\n c"
    assert r("a {{ \"b\" -}}\n\n  c") == "a bc"
    assert r("x{{/* a comment */}}y {{- /* trimmed */ -}} z") == "xyz"
    assert r("{{ .Values.big }} {{ .Values.port }} {{ .Values.half }}") == "1e+06 9108 0.5"  # float64, Go's %v
    assert r("{{ .Values.port | quote }}") == '"9108"'
    assert r("k:{{- toYaml .Values.m | nindent 2 }}") == "k:\n  a:\n  - 1\n  - x\n  b: 1"
    assert r('{{ .Values.empty | default "d" }} {{ .Values.on | default "d" }}') == "d true"
    assert r("{{ if .Values.nothing }}yes{{ else }}no{{ end }} {{ if not .Values.on }}x{{ end }}") == "no "
    assert r("{{ .Values.cfg | toToml }}") == 'top = 1.0\n\n[s]\n  k = 30.0\n  name = "n"\n'
    assert minihelm.render_string('{{ include "l" . | indent 2 }}', {},
                                  defines='{{- define "l" -}}\na: {{ .Release.Name }}\nb: 1\n{{- end }}') == \
        "  a: r\n  b: 1"
    assert minihelm.merge_values({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    assert minihelm.go_format_float(123456.0) == "123456" and minihelm.go_format_float(1e-5) == "1e-05"


def test_healthcheck_speaks_https_and_sends_credentials_when_probes_are_protected(tmp_path):
    """With metrics TLS the image's check must use HTTPS; with protect_probes, basic auth too."""
    from tests.helpers.tls import make_pki

    pki = make_pki(tmp_path / "pki")
    tls = {"tls_certfile": pki.server_cert, "tls_keyfile": pki.server_key}

    async def main() -> dict[str, int]:
        codes = {}
        async with _health_server(**tls) as server:
            env = {"STREAMKM_METRICS__PORT": str(server.port), "STREAMKM_METRICS__TLS_CERTFILE": str(pki.server_cert)}
            codes["https"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
            plain = {"STREAMKM_METRICS__PORT": str(server.port)}
            codes["http to https"] = (await asyncio.to_thread(_run_healthcheck, plain)).returncode
        async with _health_server(**tls, basic_auth=("probe", "s3cret"), protect_probes=True) as server:
            env = {"STREAMKM_METRICS__PORT": str(server.port), "STREAMKM_METRICS__TLS_CERTFILE": str(pki.server_cert),
                   "STREAMKM_METRICS__PROTECT_PROBES": "true", "STREAMKM_METRICS__BASIC_AUTH_USERNAME": "probe"}
            codes["protected, no password"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
            env["STREAMKM_METRICS__BASIC_AUTH_PASSWORD"] = "s3cret"
            codes["protected, with password"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
            env["STREAMKM_METRICS__BASIC_AUTH_PASSWORD"] = "wrong"
            codes["protected, wrong password"] = (await asyncio.to_thread(_run_healthcheck, env)).returncode
        return codes

    assert asyncio.run(main()) == {"https": 0, "http to https": 1, "protected, no password": 1,
                                   "protected, with password": 0, "protected, wrong password": 1}
