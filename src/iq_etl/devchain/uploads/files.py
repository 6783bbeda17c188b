"""The uploaded files: deterministic file bytes, splitting into chunks, Merkle roots and the
metadata JSON the SDK writes."""
from __future__ import annotations

import base64
import hashlib
import json
import random

from solders.pubkey import Pubkey


def make_file(rng: random.Random, kind: str, size: int) -> tuple[bytes, str]:
    """Deterministic file bytes of `kind` and roughly `size` bytes, with the metadata filetype."""
    if kind == "png":
        head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
        return head + rng.randbytes(max(0, size - len(head))), "image/png"
    if kind == "json":
        items = []
        while sum(len(i) for i in items) < size:
            items.append(json.dumps({"id": len(items), "value": rng.randrange(10**9), "tag": rng.choice(WORDS)}))
        return ("[" + ",".join(items) + "]").encode(), "application/json"
    if kind == "text":
        words = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(rng.choice(WORDS))
        return (" ".join(words) + "\n").encode(), "text/plain"
    return rng.randbytes(size), "application/octet-stream"


WORDS = ("solana", "chunk", "session", "upload", "archive", "ledger", "slot", "epoch", "file", "merkle",
         "inscription", "gateway", "reader", "frog", "lorem", "ipsum", "dolor", "amet", "über", "naïve")


def split_text(text: bytes, size: int) -> list[bytes]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [b""]


def merkle_root(pieces: list[bytes]) -> bytes:
    """A binary sha256 Merkle root over the chunk payloads (odd node paired with itself)."""
    level = [hashlib.sha256(p).digest() for p in pieces]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def g1_offset(pieces: list[bytes]) -> str:
    """G1's `offset`: leaves base58(sha256(piece)), parent base58(sha256(left_b58 + right_b58)),
    an odd node paired with itself (docs/protocol.md §6, as the IQ backend computes it)."""
    level = [str(Pubkey(hashlib.sha256(p).digest())) for p in pieces]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [str(Pubkey(hashlib.sha256((level[i] + level[i + 1]).encode()).digest()))
                 for i in range(0, len(level), 2)]
    return level[0]


def metadata_json(filetype: str, filename: str, total: int, data: str | None = None, method: int = 0) -> str:
    """Metadata as the TS SDK writes it (JSON.stringify: compact, non-ASCII kept, controls escaped)."""
    meta: dict = {"filetype": filetype, "method": method, "filename": filename, "total_chunks": total}
    if data is not None:
        meta["data"] = data
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)
