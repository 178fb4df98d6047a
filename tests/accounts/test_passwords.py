"""Password hashing at the production work factor (the rest of the suite hashes at a lower one,
see tests/support/plugin.py): the stored form names its parameters and verification follows them.
"""

from __future__ import annotations

import pytest
from support.plugin import PRODUCTION_SCRYPT

from bindify_appliance.accounts import passwords
from bindify_appliance.accounts.passwords import hash_password, verify_password


@pytest.fixture
def production_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    n, r, p = PRODUCTION_SCRYPT
    monkeypatch.setattr(passwords, "SCRYPT_N", n)
    monkeypatch.setattr(passwords, "SCRYPT_R", r)
    monkeypatch.setattr(passwords, "SCRYPT_P", p)


def test_the_production_factor_is_the_documented_one() -> None:
    # passwords.py's docstring: N=2**14, r=10, p=1 (about 100 ms on the 2-core CI machine).
    assert PRODUCTION_SCRYPT == (2**14, 10, 1)


@pytest.mark.usefixtures("production_factor")
def test_a_production_hash_names_its_parameters_and_verifies() -> None:
    stored = hash_password("correct horse battery")
    scheme, n, r, p, _salt, _digest = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", *PRODUCTION_SCRYPT)
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterz", stored)


def test_a_hash_verifies_under_the_parameters_it_names() -> None:
    cheap = hash_password("correct horse battery")  # the suite's lower factor
    assert cheap.split("$")[1:4] != [str(v) for v in PRODUCTION_SCRYPT]
    assert verify_password("correct horse battery", cheap)
    # The same digest read under other parameters no longer matches.
    scheme, _n, r, p, salt, digest = cheap.split("$")
    assert not verify_password("correct horse battery", f"{scheme}$1024${r}${p}${salt}${digest}")
    assert not verify_password("correct horse battery", None)
    assert not verify_password("correct horse battery", "bcrypt$1$2$3$4$5")
