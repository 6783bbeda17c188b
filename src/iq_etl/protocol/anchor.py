"""Anchor discriminators: `sha256("global:" + name)[:8]` for instructions (docs/protocol.md §2)."""
from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=None)
def anchor_tag(name: str) -> bytes:
    """The 8-byte Anchor instruction tag of `name` (snake_case IDL name)."""
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]
