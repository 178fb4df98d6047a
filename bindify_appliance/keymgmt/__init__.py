"""Master-key management on top of the store: usage counts, orphan checks and rotation.

`usage` answers "which key protects how many blobs" (and which stored fingerprints no key
matches); `rotation` plans a rotation, checks live instances and re-encrypts. The `keys`
commands (`commands.keys`) and `serve`'s orphan check are the callers. Nothing here logs.
"""

from __future__ import annotations

from bindify_appliance.keymgmt.rotation import (
    LIVE_MAX_AGE,
    Reencryptor,
    RotationFailure,
    RotationPlan,
    RotationResult,
    describe_instance,
    instances_lacking,
    plan_rotation,
    wait_for_instances,
)
from bindify_appliance.keymgmt.usage import (
    KeyUsage,
    UsageReport,
    key_usage,
    orphan_fingerprints,
)

__all__ = [
    "LIVE_MAX_AGE",
    "KeyUsage",
    "Reencryptor",
    "RotationFailure",
    "RotationPlan",
    "RotationResult",
    "UsageReport",
    "describe_instance",
    "instances_lacking",
    "key_usage",
    "orphan_fingerprints",
    "plan_rotation",
    "wait_for_instances",
]
