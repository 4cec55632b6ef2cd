"""The salted hash of a patient or lesion key (``indexer/group_keys.py``)."""

from __future__ import annotations

import hashlib

import pytest

from indexer.group_keys import hash_group_key


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


def test_the_commands_read_the_salt_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from indexer.group_keys import DEFAULT_GROUP_SALT, group_salt_from_environment

    monkeypatch.delenv("MEDRET_GROUP_SALT", raising=False)
    assert group_salt_from_environment() == DEFAULT_GROUP_SALT
    monkeypatch.setenv("MEDRET_GROUP_SALT", "a-deployment-secret")
    assert group_salt_from_environment() == "a-deployment-secret"
