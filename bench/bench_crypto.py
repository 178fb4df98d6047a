"""Micro-benchmark of the per-request crypto work (prints figures; asserts nothing).

What a proxy request does for its credential: parse the 86 characters, hash secret1 for the
lookup, then either derive the zero-knowledge key and open the token blob, or derive the managed
key and open it. Sealing happens on refresh and creation. Each figure is the median over several
rounds of µs per operation (`reference/performance.md` measured ~0.73 µs for a bare AES-GCM
decrypt of a ~100-byte token on the project's 2-vCPU machine).

Run: .venv/bin/python bench/bench_crypto.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bindify_appliance.crypto import (
    Keyring,
    MasterKey,
    format_api_key,
    generate_credentials,
    generate_master_key,
    managed_key,
    open_json,
    open_managed,
    open_sealed,
    parse_api_key,
    parse_credentials,
    seal,
    seal_json,
    seal_managed,
    secret1_lookup_hash,
    secret2_verifier,
    verify_secret2,
    zero_knowledge_key,
)

ROUNDS = 7
CONN = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
TOKENS = {
    "access_token": "lin_oauth_" + "a" * 54,
    "refresh_token": "lin_refresh_" + "b" * 52,
    "expires_at": "2026-11-29T10:00:00Z",
}


def per_op_us(fn: Callable[[], object], round_seconds: float = 0.1) -> tuple[float, float, float]:
    """(median, min, max) µs per call over ROUNDS rounds of ~round_seconds each."""
    n, elapsed = 1, 0.0
    while elapsed < round_seconds / 10:  # calibrate: grow until a batch is measurable
        n *= 2
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
    n = max(1, round(n * round_seconds / elapsed))
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    creds = generate_credentials()
    text, api_key = creds.text, "Bearer " + format_api_key(creds)
    zk_key = zero_knowledge_key(creds.secret2_b64)
    zk_blob = seal_json(zk_key, TOKENS, row=CONN, field="tokens")
    keyring = Keyring([MasterKey(generate_master_key()), MasterKey(generate_master_key())])
    managed_blob, fp = seal_managed(
        keyring, CONN, b'{"api_key":"sk-' + b"x" * 48 + b'"}', field="api_key"
    )
    verifier = secret2_verifier(creds)
    plaintext = b'{"access_token":"' + b"a" * 64 + b'","refresh_token":"' + b"b" * 64 + b'"}'

    cases: list[tuple[str, Callable[[], object]]] = [
        ("parse credentials (86 chars)", lambda: parse_credentials(text)),
        ("parse API key (Bearer bnd_live_…)", lambda: parse_api_key(api_key)),
        ("secret1 lookup hash", lambda: secret1_lookup_hash(creds)),
        ("verify secret2 (managed)", lambda: verify_secret2(creds, verifier)),
        ("zero-knowledge key derivation", lambda: zero_knowledge_key(creds.secret2_b64)),
        (
            "open token blob (key in hand)",
            lambda: open_sealed(zk_key, zk_blob, row=CONN, field="tokens"),
        ),
        (
            "zero-knowledge: derive + open_json",
            lambda: open_json(
                zero_knowledge_key(creds.secret2_b64), zk_blob, row=CONN, field="tokens"
            ),
        ),
        ("managed key derivation", lambda: managed_key(keyring.active.key, CONN)),
        (
            "managed: lookup + derive + open",
            lambda: open_managed(keyring, fp, CONN, managed_blob, field="api_key"),
        ),
        (
            "seal ~150-byte token (key in hand)",
            lambda: seal(zk_key, plaintext, row=CONN, field="tokens"),
        ),
        (
            "seal_managed (derive + seal)",
            lambda: seal_managed(keyring, CONN, plaintext, field="tokens"),
        ),
        (
            "full ZK request: parse + hash + derive + open",
            lambda: (
                secret1_lookup_hash(c := parse_credentials(text)),
                open_json(zero_knowledge_key(c.secret2_b64), zk_blob, row=CONN, field="tokens"),
            ),
        ),
    ]
    print(f"bindify crypto micro-benchmark: µs per operation, median (min-max) of {ROUNDS} rounds")
    width = max(len(name) for name, _ in cases)
    for name, fn in cases:
        median, low, high = per_op_us(fn)
        print(f"  {name:<{width}}  {median:8.2f}  ({low:.2f}-{high:.2f})")


if __name__ == "__main__":
    main()
