"""packaging/docker/compose.scale.yml: two appliances on one PostgreSQL and one Redis.

No container engine runs here, so the file is checked as data: it parses, every appliance shares
the database, KV, master keys and secret key through secrets (never inline), has its own data
volume, publishes on loopback only, and every BINDIFY_* name is one the appliance reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bindify_appliance.config import env_name, options

COMPOSE = Path(__file__).resolve().parents[2] / "packaging" / "docker" / "compose.scale.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_two_appliances_share_postgres_redis_and_keys() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "noeviction" in services["redis"]["command"]
    appliances = {k: v for k, v in services.items() if k.startswith("bindify-")}
    assert len(appliances) >= 2
    known = {env_name(name) for name, _, _ in options()}
    known |= {env_name(name) + "_FILE" for name, opt, _ in options() if opt.secret}
    shared = None
    volumes = set()
    for name, svc in appliances.items():
        env = svc["environment"]
        assert set(env) <= known, (name, set(env) - known)
        assert "BINDIFY_DATABASE_URL" not in env and "BINDIFY_MASTER_KEYS" not in env
        assert env["BINDIFY_KV_URL"].startswith("redis://redis:")
        for secret in ("database_url", "master_keys", "secret_key"):
            assert secret in svc["secrets"] and secret in compose["secrets"]
        view = {k: env[k] for k in env}
        assert shared in (None, view), "the instances must share one configuration"
        shared = view
        ports = svc["ports"]
        assert ports and all(p.startswith("127.0.0.1:") for p in ports)
        (volume,) = svc["volumes"]
        assert volume.endswith(":/data") and volume.split(":")[0] in compose["volumes"]
        volumes.add(volume)
        assert svc["build"]["dockerfile"] == "packaging/docker/Dockerfile"
        assert set(svc["depends_on"]) == {"postgres", "redis"}
    assert len(volumes) == len(appliances), "each instance has its own data directory"


def test_the_trusted_proxy_is_the_networks_gateway() -> None:
    compose = _compose()
    (subnet,) = compose["networks"]["default"]["ipam"]["config"]
    for name, svc in compose["services"].items():
        if name.startswith("bindify-"):
            assert svc["environment"]["BINDIFY_TRUSTED_PROXIES"] == subnet["gateway"] + "/32"
