"""The salted hash under which a case's patient or lesion key is stored, and its default salt.

Standard library only, so that settings (``app/settings.py``) can name the default
without importing the SQL store; :mod:`indexer.store` re-exports both.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

# The salt when a deployment sets none (``MEDRET_GROUP_SALT``, ``IndexerConfig.group_salt``).
DEFAULT_GROUP_SALT: Final = "medret"


def group_salt_from_environment() -> str:
    """The salt the command-line tools use: ``MEDRET_GROUP_SALT``, else the default."""
    return os.environ.get("MEDRET_GROUP_SALT", DEFAULT_GROUP_SALT)


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
