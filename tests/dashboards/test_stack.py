"""docker-compose.yml, deploy/ and dashboards/provisioning/: parsed and cross-checked (Docker
cannot run here).  promtool, from the same Debian package as prometheus, checks the config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.dashboards.model import INTERLOCK_DB, PROMETHEUS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROVISIONING = ROOT / "dashboards" / "provisioning"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _mounts(service: str) -> dict[str, str]:
    """Bind mounts of a service: container path → repo-relative source."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


REPLICAS = ("interlock-1", "interlock-2")


def test_compose_brings_up_the_whole_stack() -> None:
    assert set(SERVICES) == {"postgres", "redis", *REPLICAS, "haproxy", "prometheus", "grafana"}
    assert (ROOT / "Dockerfile").is_file()
    assert "8080:8080" in SERVICES["haproxy"]["ports"] and "3000:3000" in SERVICES["grafana"]["ports"]
    for replica in REPLICAS:
        svc = SERVICES[replica]
        assert svc["build"] == "." and "ports" not in svc  # reached through HAProxy only
        deps = svc["depends_on"]
        assert deps == {"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
        assert svc["command"][:2] == ["interlock", "serve"] and "--workers" in svc["command"]


def test_replicas_keep_their_own_spool_volume() -> None:
    data = [next(v for v in SERVICES[r]["volumes"] if v.endswith(":/data")) for r in REPLICAS]
    assert len(set(data)) == 2 and all(v.split(":")[0] in COMPOSE["volumes"] for v in data)
    assert all(SERVICES[r]["environment"]["INTERLOCK_SPOOL_DIR"] == "/data/spool" for r in REPLICAS)


def test_haproxy_runs_the_config_the_tests_use_pointed_at_both_replicas() -> None:
    svc = SERVICES["haproxy"]
    assert _mounts("haproxy")["/usr/local/etc/haproxy/haproxy.cfg"] == "./deploy/haproxy.cfg"
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    used = set(re.findall(r"\$\{(\w+)-", cfg))
    assert used == {"HAPROXY_BIND", "HAPROXY_STATS_BIND", "INTERLOCK_REPLICA_1", "INTERLOCK_REPLICA_2"}
    assert used <= set(svc["environment"])
    assert {svc["environment"]["INTERLOCK_REPLICA_1"], svc["environment"]["INTERLOCK_REPLICA_2"]} == \
        {f"{r}:8080" for r in REPLICAS}
    assert svc["environment"]["HAPROXY_BIND"] == ":8080"
    assert set(svc["depends_on"]) == set(REPLICAS)


def test_haproxy_config_passes_haproxy_check() -> None:
    from tests.topology import haproxy_binary

    env = {**os.environ, "HAPROXY_BIND": "127.0.0.1:1", "HAPROXY_STATS_BIND": "127.0.0.1:2",
           "INTERLOCK_REPLICA_1": "127.0.0.1:3", "INTERLOCK_REPLICA_2": "127.0.0.1:4"}
    done = subprocess.run([haproxy_binary(), "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_bind_mount_exists_in_the_repository() -> None:
    for service in SERVICES:
        for source in _mounts(service).values():
            assert (ROOT / source).exists(), f"{service}: {source} is missing"


def test_interlock_is_wired_to_postgres_and_redis() -> None:
    pg = SERVICES["postgres"]["environment"]
    for replica in REPLICAS:
        env = SERVICES[replica]["environment"]
        assert re.fullmatch(rf"postgresql://{pg['POSTGRES_USER']}:.+@postgres:5432/{pg['POSTGRES_DB']}",
                            env["INTERLOCK_DATABASE_URL"])
        assert env["INTERLOCK_REDIS_URL"] == "redis://redis:6379/0"
        assert env["INTERLOCK_MEMORY_MB"]


def test_prometheus_scrapes_interlock_metrics() -> None:
    assert _mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    [job] = _yaml(ROOT / "deploy" / "prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # every replica (each merges its own workers), not HAProxy's one-at-a-time answer
    assert job["static_configs"] == [{"targets": [f"{r}:8080" for r in REPLICAS]}]


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool (Debian package prometheus) is missing, and CI=true makes it mandatory")
        pytest.skip("promtool is not on PATH (apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_provisioned_datasources_have_the_uids_the_dashboards_default_to() -> None:
    sources = {d["uid"]: d for d in _yaml(PROVISIONING / "datasources" / "interlock.yaml")["datasources"]}
    assert set(sources) == {PROMETHEUS.uid, INTERLOCK_DB.uid}
    for ds in (PROMETHEUS, INTERLOCK_DB):
        assert (sources[ds.uid]["type"], sources[ds.uid]["name"]) == (ds.type, ds.name)
    assert sources[INTERLOCK_DB.uid]["jsonData"]["database"], "Grafana 10+ reads the database from jsonData"


def test_grafana_environment_fills_every_provisioning_variable() -> None:
    text = (PROVISIONING / "datasources" / "interlock.yaml").read_text()
    env = SERVICES["grafana"]["environment"]
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(env)
    assert env["INTERLOCK_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["INTERLOCK_DB_HOST"] == "postgres:5432"


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./dashboards/provisioning/dashboards"
    [provider] = _yaml(PROVISIONING / "dashboards" / "interlock.yaml")["providers"]
    assert provider["type"] == "file" and provider["folder"] == "Interlock"
    assert mounts[provider["options"]["path"]] == "./dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_grafana_reads_the_database_as_the_read_only_role() -> None:
    script = (ROOT / "deploy" / "postgres" / "10-grafana-reader.sh").read_text()
    user = SERVICES["grafana"]["environment"]["INTERLOCK_DB_USER"]
    assert f"CREATE ROLE {user} LOGIN" in script and f"GRANT SELECT ON TABLES TO {user}" in script
    assert _mounts("postgres")["/docker-entrypoint-initdb.d/10-grafana-reader.sh"] == \
        "./deploy/postgres/10-grafana-reader.sh"
