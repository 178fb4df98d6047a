"""The standard jobs: expired dynamic registrations are forgotten, live ones kept."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bindify_appliance.clock import ManualClock
from bindify_appliance.config import load_settings
from bindify_appliance.context import AppContext
from bindify_appliance.datadir import KeySource, ensure_data_dir
from bindify_appliance.jobs import standard_jobs
from bindify_appliance.kv import MemoryKV
from bindify_appliance.scheduler import Scheduler
from bindify_appliance.store import Store, apply
from bindify_appliance.store.models import DcrRegistration, JobRun


async def test_registration_liveness_forgets_expired_clients(tmp_path: Path) -> None:
    settings = load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path / "data")})
    ensure_data_dir(settings)
    store = Store(settings.database_url)
    apply(store, backup_dir=None)
    clock = ManualClock()
    ctx = AppContext(
        settings=settings,
        store=store,
        kv=MemoryKV(clock),
        keys=KeySource(settings, create=True),
        clock=clock,
        secret_key=b"k" * 32,
        instance_id="test",
    )
    now = clock.now()

    def add(issuer: str, expires: object) -> None:
        DcrRegistration.create(
            service="acme",
            issuer=issuer,
            registration_sealed="v1:x",
            key_fingerprint="",
            client_id_expires_at=expires,
            created_at=now,
            updated_at=now,
        )

    store.call(add, "https://dead.example", now - timedelta(seconds=1))
    store.call(add, "https://live.example", now + timedelta(days=30))
    store.call(add, "https://forever.example", None)
    (job,) = [j for j in standard_jobs(ctx) if j.name == "registration-liveness"]
    assert await Scheduler(store, ctx.kv, clock, "test").run_once(job) == "ok"
    left = store.call(lambda: sorted(r.issuer for r in DcrRegistration.select()))
    assert left == ["https://forever.example", "https://live.example"]
    assert "1 expired" in (store.call(JobRun.get_by_id, "registration-liveness").detail or "")
    store.close()
