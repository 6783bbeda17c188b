"""What every chain source is: a picklable SourceSpec (worker processes rebuild the source from it), the
Source protocol (blocks of a slot range, in slot order) and `open_source`, the one factory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from iq_etl.errors import IQEtlError
from iq_etl.solana.model import ChainBlock

SOURCES = ("car", "rpc-blocks", "rpc-signatures")


class Source(Protocol):
    """A chain source: the blocks of an inclusive slot range, in slot order (skipped slots as
    `ChainBlock(skipped=True)`); transactions may be pre-filtered by `wanted_keys`."""

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]: ...


@dataclass(frozen=True)
class SourceSpec:
    """Everything a worker needs to open the source itself (picklable)."""

    kind: str
    car_url: str | None = None
    rpc_url: str | None = None
    rpc_options: tuple[tuple[str, Any], ...] = ()
    signatures: tuple[tuple[str, int], ...] = ()   # (signature, slot) pairs for rpc-signatures
    car_patience_s: float | None = None           # HTTP CAR reads: IQ_CAR_PATIENCE (None: the default)
    car_connections: int | None = None            # HTTP CAR reads: IQ_CAR_CONNECTIONS (None: the default)


def open_source(spec: SourceSpec, wanted_keys: frozenset[bytes] | None) -> Source:
    """An object with `iter_blocks(first, last)` for the spec. Imported lazily: workers only load
    what their source needs."""
    if spec.kind == "car":
        from iq_etl.ingest.sources.car.source import CarSource

        http_options = {k: v for k, v in (("patience", spec.car_patience_s),
                                          ("connections", spec.car_connections)) if v}
        if not spec.car_url:
            raise IQEtlError("a CAR source needs a location (IQ_CAR_URL / --car-url)")
        return CarSource(spec.car_url, wanted_keys=wanted_keys, http_options=http_options or None)
    from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
    from iq_etl.ingest.sources.rpc.client import RpcClient
    from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
    if not spec.rpc_url:
        raise IQEtlError(f"the {spec.kind} source needs an RPC URL (IQ_RPC_URL / --rpc-url)")
    client = RpcClient(spec.rpc_url, **dict(spec.rpc_options))
    if spec.kind == "rpc-blocks":
        return RpcBlockSource(client, wanted_keys=wanted_keys)
    if spec.kind == "rpc-signatures":
        return RpcSignatureSource(client, list(spec.signatures))  # (sig, slot) pairs: no lookups
    raise IQEtlError(f"unknown source {spec.kind!r}; use one of {', '.join(SOURCES)}")
