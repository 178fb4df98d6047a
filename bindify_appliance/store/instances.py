"""Instance records: each running `serve` process and the master-key fingerprints it holds.

`keys rotate` reads these to check that every live instance knows the key it is about to make
active (DESIGN §7). Every function is a synchronous unit of work for `Store.run`/`Store.call`.

Invariants:
- `key_fingerprints` is a JSON list of the fingerprints the instance holds, sorted (a set: which
  key is active is not recorded, only which keys can open blobs). Fingerprints are not secrets.
- An instance is *live* while its `heartbeat_at` is within `max_age` of now. Callers heartbeat
  at start, after every key reload and periodically (well inside the `max_age` readers use);
  a process killed without `unregister_instance` simply stops being live.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bindify_appliance.store.models import Instance

__all__ = [
    "InstanceRecord",
    "heartbeat",
    "live_instances",
    "prune_instances",
    "register_instance",
    "unregister_instance",
]


@dataclass(frozen=True)
class InstanceRecord:
    """One instance row as plain data."""

    id: str
    hostname: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    fingerprints: frozenset[str]


def _encode(fingerprints: Sequence[str]) -> str:
    return json.dumps(sorted(set(fingerprints)))


def _decode(text: str | None) -> frozenset[str]:
    # A row written by a newer or broken writer must not crash `keys rotate`: an unreadable
    # list counts as "holds no key", which can only make rotation refuse, never proceed wrongly.
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return frozenset()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(item for item in value if isinstance(item, str))


def register_instance(
    instance_id: str, version: str, fingerprints: Sequence[str], now: datetime
) -> None:
    """Record this process (hostname and pid included) as a live instance holding `fingerprints`.

    Idempotent for one `instance_id`: a second call replaces the row (a re-registration after
    the row was pruned, for example).
    """
    values = {
        Instance.hostname: socket.gethostname(),
        Instance.pid: os.getpid(),
        Instance.version: version,
        Instance.started_at: now,
        Instance.heartbeat_at: now,
        Instance.key_fingerprints: _encode(fingerprints),
    }
    Instance.insert({Instance.id: instance_id, **values}).on_conflict(
        conflict_target=[Instance.id], update=values
    ).execute()


def heartbeat(instance_id: str, fingerprints: Sequence[str], now: datetime) -> bool:
    """Refresh the heartbeat and the held fingerprints; False when the row no longer exists.

    On False the caller registers again (`register_instance`), since only it knows its version.
    """
    changed = (
        Instance.update(heartbeat_at=now, key_fingerprints=_encode(fingerprints))
        .where(Instance.id == instance_id)
        .execute()
    )
    return bool(changed)


def unregister_instance(instance_id: str) -> None:
    """Remove the instance's row (graceful shutdown)."""
    Instance.delete().where(Instance.id == instance_id).execute()


def live_instances(now: datetime, max_age: timedelta) -> list[InstanceRecord]:
    """Instances whose heartbeat is within `max_age` of `now`, oldest start first."""
    rows = (
        Instance.select()
        .where(Instance.heartbeat_at >= now - max_age)
        .order_by(Instance.started_at, Instance.id)
    )
    return [
        InstanceRecord(
            id=row.id,
            hostname=row.hostname,
            pid=row.pid,
            version=row.version,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            fingerprints=_decode(row.key_fingerprints),
        )
        for row in rows
    ]


def prune_instances(before: datetime) -> int:
    """Delete rows whose last heartbeat is older than `before`; returns how many."""
    return int(Instance.delete().where(Instance.heartbeat_at < before).execute())
