"""The salted hash of a patient or lesion key, and its salt (``indexer/group_keys.py``)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable

import pytest

from indexer.group_keys import (
    GroupSaltError,
    checked_group_salt,
    generate_group_salt,
    group_salt_fingerprint,
    group_salt_from_environment,
    hash_group_key,
)
from support.group_salt import OTHER_GROUP_SALT, TEST_GROUP_SALT


def test_hash_group_key_is_stable_salted_and_never_the_key() -> None:
    key = "HAM_0000118"
    digest = hash_group_key(key, "salt-1")
    assert digest == hash_group_key(key, "salt-1")
    assert digest != key
    assert key not in digest
    assert len(digest) == 64
    assert digest != hash_group_key(key, "salt-2")
    assert digest != hashlib.sha256(key.encode()).hexdigest()
    with pytest.raises(ValueError, match="salt"):
        hash_group_key(key, "")


def de_bruijn_bits(order: int) -> str:
    """The binary de Bruijn sequence of ``order``: every run of ``order`` bits exactly once."""
    bits, seen = "0" * order, {"0" * order}
    while True:
        for bit in "10":
            run = bits[len(bits) - order + 1 :] + bit
            if run not in seen:
                seen.add(run)
                bits += bit
                break
        else:
            return bits


@pytest.mark.parametrize(
    ("salt", "reason"),
    [
        ("", "is not set"),
        ("medret", "is too short: 6 base64 characters hold at most 36 bits"),  # the old default
        ("CHANGE_ME", "is too short"),
        (secrets.token_hex(16), "is too short: 32 hex characters hold at most 128 bits"),
        (str(uuid.uuid4()), "is too short"),
        (secrets.token_hex(24), "is too short: 48 hex"),  # what .env.example used to suggest
        ("correct horse battery staple and more", "is too short"),
        ("a" * 64, "repeats a run of 8 characters"),
        ("medret" * 12, "repeats a run of 8 characters"),
        ("0123456789abcdef" * 4, "repeats a run of 8 characters"),
        ("change-me-" * 6 + "change-me", "repeats a run of 8 characters"),
        (de_bruijn_bits(6), "has too few different characters"),  # 0/1, no run twice
    ],
)
def test_a_weak_salt_is_refused_with_how_to_make_one(salt: str, reason: str) -> None:
    with pytest.raises(GroupSaltError) as refused:
        checked_group_salt(salt)
    message = str(refused.value)
    assert message.startswith(f"MEDRET_GROUP_SALT {reason}")
    assert "python -c 'import secrets; print(secrets.token_hex(32))'" in message
    assert "\n" not in message
    if salt:
        assert salt not in message  # the refused value is never echoed
    with pytest.raises(GroupSaltError):
        group_salt_fingerprint(salt)


@pytest.mark.parametrize(
    "make",
    [
        generate_group_salt,
        lambda: secrets.token_hex(32),
        lambda: secrets.token_hex(32).upper(),
        lambda: secrets.token_urlsafe(32),
        lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        lambda: "".join(secrets.choice([chr(c) for c in range(32, 127)]) for _ in range(39)),
    ],
    ids=["generated", "hex", "HEX", "urlsafe", "base64", "printable"],
)
def test_32_random_bytes_in_any_usual_encoding_are_accepted(make: Callable[[], str]) -> None:
    for _ in range(200):  # never refused by chance
        salt = make()
        assert checked_group_salt(salt) == salt


def test_the_fingerprint_tells_salts_apart_and_reveals_neither() -> None:
    fingerprint = group_salt_fingerprint(TEST_GROUP_SALT)
    assert fingerprint == group_salt_fingerprint(TEST_GROUP_SALT)
    assert fingerprint != group_salt_fingerprint(OTHER_GROUP_SALT)
    assert len(fingerprint) == 64
    assert TEST_GROUP_SALT not in fingerprint
    assert fingerprint != hashlib.sha256(TEST_GROUP_SALT.encode()).hexdigest()  # no plain hash
    assert fingerprint != hash_group_key(TEST_GROUP_SALT, TEST_GROUP_SALT)


def test_the_commands_read_the_salt_from_the_environment_with_no_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEDRET_GROUP_SALT", raising=False)
    assert group_salt_from_environment() == ""
    monkeypatch.setenv("MEDRET_GROUP_SALT", TEST_GROUP_SALT)
    assert group_salt_from_environment() == TEST_GROUP_SALT
