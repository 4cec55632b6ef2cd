"""The salts of the tests: every build under test hashes group keys with TEST_GROUP_SALT."""

from __future__ import annotations

from typing import Final

# 32 random bytes as 64 hex digits (made once with secrets.token_hex(32)); never a secret.
TEST_GROUP_SALT: Final = "6dd34498da671e2d1fdf88b9c561d180a575ae194f8b5ccdce076674955fb7e7"
OTHER_GROUP_SALT: Final = "241781c0a2e563dae9a7fa971b3159019311cbfe06ff86b1b3db835d830777cb"
# What a subprocess that indexes (``medret index``, ``medret serve``'s jobs) needs set.
SALT_ENVIRONMENT: Final = {"MEDRET_GROUP_SALT": TEST_GROUP_SALT}
