"""Offline checks of deploy/: compose, Kubernetes manifests, Prometheus rules, Grafana, image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import DESTINATION_VARS, ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"


def known_env_vars() -> set[str]:
    """Every variable app/config.py reads, plus the two read elsewhere (broker flavour, trace ids)."""
    source = (ROOT / "app/config.py").read_text()
    names = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_(?:int|float|bool|file|choice)\(\s*env,\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_file\("([A-Z][A-Z0-9_]+)"', source))
    for dest, variables in DESTINATION_VARS.items():
        names |= set(variables.values()) | {f"{dest.upper()}_RATE_SCALE",
                                             f"{dest.upper()}_BATCH_WINDOW_S"}
    return names | {"BROKER_FLAVOR", "RELAY_TRACE_IDS"}


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def test_known_env_vars_are_read_from_config():
    known = known_env_vars()
    assert {"BROKER_URL", "STORE", "PARTITIONS", "WEB_HOST", "GROUP_INSTANCE_ID",
            "BREAKER_COOLDOWN_S", "MAAC_TOKEN", "BRAZE_RATE_SCALE"} <= known
    assert "NOT_A_SETTING" not in known


# --- compose ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def test_compose_services(compose):
    services = compose["services"]
    assert {"kafka", "topics", "relay-1", "relay-2", "sandbox", "prometheus", "grafana"} <= set(
        services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "zookeeper" not in services
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert services["topics"]["command"] == ["topics", "create"]
    for name in ("relay-1", "relay-2"):
        relay = services[name]
        assert relay["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert relay["build"]["dockerfile"] == "Dockerfile"
        assert any(v.endswith(":/data") for v in relay["volumes"])
    ids = {services[n]["environment"]["GROUP_INSTANCE_ID"] for n in ("relay-1", "relay-2")}
    assert len(ids) == 2  # static members need distinct ids


def test_compose_env_is_what_the_relay_understands(compose):
    known = known_env_vars()
    for name in ("relay-1", "relay-2", "topics"):
        service = compose["services"][name]
        env = dict(service.get("environment") or {})
        for entry in service.get("env_file", []):
            path = COMPOSE / (entry["path"] if isinstance(entry, dict) else entry)
            required = entry.get("required", True) if isinstance(entry, dict) else True
            if required:
                assert path.is_file(), path
            if path.is_file():
                env.update(read_env_file(path))
        unknown = sorted(set(env) - known)
        assert not unknown, f"{name}: variables app/config.py does not read: {unknown}"
        settings = load_settings({k: str(v) for k, v in env.items()})  # raises on a bad value
        assert settings.broker_url == "kafka://kafka:9092"
    relay_env = read_env_file(COMPOSE / "sandbox.env")
    assert all(load_settings(relay_env).destination(d).configured for d in DESTINATION_VARS)


def test_compose_referenced_files_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE / build["context"]).resolve()
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (COMPOSE / host).exists(), f"{name}: {host}"
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    assert targets == {"relay-1:6066", "relay-2:6066"}
    assert {"relay-1", "relay-2"} <= set(compose["services"])


def test_image_definition():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["relay"]' in dockerfile and 'CMD ["worker"]' in dockerfile
    for path in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (ROOT / path).exists(), path
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    assert "app" not in ignored and "topics" not in ignored


# --- kubernetes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = {}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    assert {p.name for p in K8S.glob("*.yaml")} == set(kustomization["resources"]) | {
        "kustomization.yaml"}
    return docs


def test_k8s_kinds(manifests):
    kinds = {key.split("/")[0] for key in manifests}
    assert kinds == {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget",
                     "ScaledObject"}
    for doc in manifests.values():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_k8s_statefulset(manifests):
    sts = manifests["StatefulSet/loyalty-relay"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert manifests[f"Service/{spec['serviceName']}"]["spec"]["clusterIP"] == "None"
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounts) <= claims
    config = manifests["ConfigMap/loyalty-relay-config"]["data"]
    assert config["STORE"] == "rocksdb://" and mounts["data"] == config["DATA_DIR"]
    refs = container["envFrom"]
    assert {f"ConfigMap/{r['configMapRef']['name']}" for r in refs if "configMapRef" in r} <= set(
        manifests)
    assert {f"Secret/{r['secretRef']['name']}" for r in refs if "secretRef" in r} <= set(manifests)
    group_id = next(e for e in container["env"] if e["name"] == "GROUP_INSTANCE_ID")
    assert group_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_k8s_selectors_match_pod_labels(manifests):
    labels = manifests["StatefulSet/loyalty-relay"]["spec"]["template"]["metadata"]["labels"]
    selectors = [doc["spec"]["selector"] for key, doc in manifests.items()
                 if key.startswith("Service/")]
    selectors.append(manifests["PodDisruptionBudget/loyalty-relay"]["spec"]["selector"][
        "matchLabels"])
    assert len(selectors) >= 3
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


def test_k8s_autoscaling_is_capped_at_the_partition_count(manifests):
    scaled = manifests["ScaledObject/loyalty-relay"]["spec"]
    sts = manifests["StatefulSet/loyalty-relay"]
    assert scaled["scaleTargetRef"]["kind"] == "StatefulSet"
    assert scaled["scaleTargetRef"]["name"] == sts["metadata"]["name"]
    partitions = int(manifests["ConfigMap/loyalty-relay-config"]["data"]["PARTITIONS"])
    assert scaled["minReplicaCount"] <= sts["spec"]["replicas"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] <= partitions
    kafka = next(t for t in scaled["triggers"] if t["type"] == "kafka")
    assert kafka["metadata"]["allowIdleConsumers"] == "false"
    config = manifests["ConfigMap/loyalty-relay-config"]["data"]
    assert kafka["metadata"]["consumerGroup"] == config["APP_ID"]
    pdb = manifests["PodDisruptionBudget/loyalty-relay"]["spec"]
    assert pdb.get("maxUnavailable", 0) == 1 or pdb.get("minAvailable", 0) >= 1


def test_k8s_config_and_secret_load_as_settings(manifests):
    env = {**manifests["ConfigMap/loyalty-relay-config"]["data"],
           **manifests["Secret/loyalty-relay-destinations"]["stringData"]}
    unknown = sorted(set(env) - known_env_vars())
    assert not unknown, unknown
    settings = load_settings(env)
    assert settings.broker_url.count("kafka://") == 3
    assert all(settings.destination(d).configured for d in DESTINATION_VARS)
    with pytest.raises(ConfigError, match="PARTITIONS"):
        load_settings({**env, "PARTITIONS": "zero"})


# --- prometheus and grafana --------------------------------------------------------------------

REQUIRED_ALERTS = {"RelayConsumerLagGrowing", "RelayEventAgeOverSLO", "RelayDeadLetterRate",
                   "RelayDestinationErrorRate", "RelayCircuitOpen",
                   "RelayDestinationAuthFailures", "RelayWorkerDown", "RelayRebalancingTooOften"}


def declared_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    import app.metrics  # noqa: F401  (registers the relay's metrics)

    names = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.describe() if hasattr(collector, "describe") else []:
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
            else:
                names.add(family.name)
    return names


def test_alert_rules_have_runbooks_and_use_exported_metrics():
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    declared = declared_metric_names()
    assert "relay_consumer_lag_messages" in declared and "relay_rebalances_total" in declared
    for rule in rules:
        assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        used = set(re.findall(r"\b(relay_[a-z0-9_]+)\b", rule["expr"]))
        assert used <= declared, (rule["alert"], used - declared)


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian package `prometheus`; `make test` installs "
                    "it when run as root)")
    return path


@pytest.mark.parametrize("args", [
    ["check", "rules", "alerts.yml"],
    ["test", "rules", "alerts_test.yml"],
    ["check", "config", "prometheus.yml"],
])
def test_promtool(args):
    result = subprocess.run([promtool(), *args], cwd=PROM, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_alert_unit_tests_cover_every_alert():
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert REQUIRED_ALERTS <= fired


def test_grafana_provisioning_points_at_the_dashboard():
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/relay.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/loyalty-relay.json").read_text())
    assert dashboard["uid"] == "loyalty-relay"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == uid for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
