"""The salted hash under which a case's patient or lesion key is stored, and its salt.

The salt (``MEDRET_GROUP_SALT``) is a secret of the deployment and has no default: whoever
knows it and holds the database can recover short patient ids by trying them all. A salt
is text of at least :data:`MIN_GROUP_SALT_BYTES` bytes (UTF-8) that looks random; the
store records its :func:`group_salt_fingerprint` per collection so that a different salt
is refused (docs/indexer.md, "The group-key salt").

Standard library only, so that settings (``app/settings.py``) can check a salt without
importing the SQL store; :mod:`indexer.store` re-exports :func:`hash_group_key`.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import os
import secrets
import string
from typing import Final

GROUP_SALT_VARIABLE: Final = "MEDRET_GROUP_SALT"
MIN_GROUP_SALT_BYTES: Final = 32
MIN_GROUP_SALT_BITS: Final = 8 * MIN_GROUP_SALT_BYTES
GENERATE_GROUP_SALT: Final = "python -c 'import secrets; print(secrets.token_hex(32))'"
# The alphabets a salt is written in, smallest first, and the bits each character can hold:
# 32 random bytes are 64 hex digits, 43 base64 characters or 39 printable ASCII characters.
_ALPHABETS: Final = (
    ("hex", frozenset(string.hexdigits), 4.0),
    ("base64", frozenset(string.ascii_letters + string.digits + "+/-_="), 6.0),
    ("printable ASCII", frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c"), 6.57),
)
# A run this long seen twice in a salt is a pattern (in 64 random hex digits: 1 in 2.5M).
_REPEATED_RUN: Final = 8
# The least information a salt's mix of characters may show (:func:`_variety_bits`): random
# ones of 32 bytes show 150 to 250, "a" × 63 + "b" shows 7, a 0/1 string of 64 shows 64.
_MIN_VARIETY_BITS: Final = 128
# What the fingerprint is an HMAC of: a fixed label, never a patient key or the salt.
_FINGERPRINT_LABEL: Final = b"medret group-salt fingerprint v1"


class GroupSaltError(ValueError):
    """A missing or weak salt; the message says how to make a good one."""


def generate_group_salt() -> str:
    """A new salt: 32 random bytes as 64 hex digits."""
    return secrets.token_hex(MIN_GROUP_SALT_BYTES)


def group_salt_problem(salt: str) -> str | None:
    """Why ``salt`` cannot salt the hashes (a phrase after "MEDRET_GROUP_SALT"), or ``None``.

    It must hold 32 random bytes by its alphabet (at most 4 bits per hex digit, 6 per base64
    character, 6.57 per printable ASCII character, 8 per byte of anything else), must not
    repeat a run of its own characters, and must show enough different ones to be random.
    """
    if not salt:
        return "is not set"
    alphabet, capacity = _capacity_bits(salt)
    if capacity < MIN_GROUP_SALT_BITS:
        return (
            f"is too short: {len(salt)} {alphabet} characters hold at most {capacity:.0f} "
            f"bits, not {MIN_GROUP_SALT_BITS}"
        )
    if _repeats_a_run(salt):
        return f"repeats a run of {_REPEATED_RUN} characters, so it is a pattern, not random"
    if _variety_bits(salt) < _MIN_VARIETY_BITS:
        return "has too few different characters to be a random value"
    return None


def checked_group_salt(salt: str) -> str:
    """``salt`` if it is usable, else a :class:`GroupSaltError` saying how to make one."""
    problem = group_salt_problem(salt)
    if problem is not None:
        raise GroupSaltError(
            f"{GROUP_SALT_VARIABLE} {problem}: it salts the hashed patient/lesion keys and "
            f"must be at least {MIN_GROUP_SALT_BYTES} random bytes, e.g. the output of "
            f"{GENERATE_GROUP_SALT} (keep it with the database backups)"
        )
    return salt


def group_salt_from_environment() -> str:
    """``MEDRET_GROUP_SALT`` as set (``""`` when unset), not yet checked."""
    return os.environ.get(GROUP_SALT_VARIABLE, "")


def group_salt_fingerprint(salt: str) -> str:
    """The checked salt's fingerprint: HMAC-SHA-256 of a fixed label keyed with it, in hex.

    Equal for equal salts, so the store can refuse a different one without holding the
    salt. Unlike a plain hash of the salt it is specific to medret (no table of hashed
    common secrets, no other system that hashed the same secret, matches it), and it
    equals no group hash (the label is no patient key).
    """
    return hmac.new(checked_group_salt(salt).encode(), _FINGERPRINT_LABEL, "sha256").hexdigest()


def hash_group_key(key: str, salt: str) -> str:
    """A salted hash of a patient or lesion key: HMAC-SHA-256 keyed with ``salt``, in hex.

    Stable for the same (key, salt), so cases of one patient can be grouped (e.g. to keep
    them in one split), but the key itself is never stored. The salt must be a secret of
    the deployment: without it, short patient ids could be recovered by trying them all.
    """
    if not key:
        raise ValueError("the group key is empty")
    if not salt:
        raise ValueError("the salt is empty: an unsalted hash of a patient id can be reversed")
    return hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()


def _capacity_bits(salt: str) -> tuple[str, float]:
    """The smallest alphabet ``salt`` is written in, and the most bits it can hold in it."""
    for name, characters, bits in _ALPHABETS:
        if characters.issuperset(salt):
            return name, len(salt) * bits
    return "UTF-8", 8.0 * len(salt.encode())


def _repeats_a_run(salt: str) -> bool:
    """Whether some run of :data:`_REPEATED_RUN` characters occurs twice (overlaps count)."""
    runs = [salt[i : i + _REPEATED_RUN] for i in range(len(salt) - _REPEATED_RUN + 1)]
    return len(set(runs)) < len(runs)


def _variety_bits(text: str) -> float:
    """Length × the Shannon entropy of the character frequencies (low for few characters)."""
    counts = collections.Counter(text)
    total = len(text)
    return -total * sum(n / total * math.log2(n / total) for n in counts.values())
