"""The CAR chain source: routes a slot range to the epoch archives that hold it (path, folder template
with `{epoch}`, or HTTP) and yields its blocks through the reader."""
from __future__ import annotations

from typing import Collection, Iterator

from iq_etl.ingest.sources.car.byte_range import READ_SIZE, preflight
from iq_etl.ingest.sources.car.reader import CarFile, MissingArchive
from iq_etl.solana.model import ChainBlock
from iq_etl.solana.slots import SlotRange, epoch_of

DEFAULT_LOCATION = "https://files.old-faithful.net/{epoch}/epoch-{epoch}.car"


class CarSource:
    """Blocks from Old Faithful CARs. `location` is a path, an http(s) URL, or a template containing
    `{epoch}` (e.g. `/data/{epoch}/epoch-{epoch}.car`, default the public Old Faithful bucket)."""

    def __init__(self, location: str = DEFAULT_LOCATION, *, wanted_keys: Collection[bytes] | None = None,
                 use_index: bool = True, read_size: int = READ_SIZE, verify_cids: bool = False,
                 http_options: dict | None = None):
        """http_options: passed to HttpSource for URLs (retries, backoff, timeout, deadline, session)."""
        self.location = str(location)
        self.http_options = http_options
        self.wanted_keys = wanted_keys
        self.use_index = use_index
        self.read_size = read_size
        self.verify_cids = verify_cids
        self.is_template = "{epoch}" in self.location

    def location_for(self, epoch: int) -> str:
        return self.location.replace("{epoch}", str(epoch)) if self.is_template else self.location

    def car_file(self, epoch: int | None = None) -> CarFile:
        if self.is_template and epoch is None:
            raise ValueError(f"{self.location}: a template needs an epoch")
        loc = self.location_for(epoch) if epoch is not None else self.location
        return CarFile(loc, wanted_keys=self.wanted_keys, read_size=self.read_size, verify_cids=self.verify_cids,
                       epoch=epoch if self.is_template else None, http_options=self.http_options)

    def archive_identity(self, epoch: int | None = None) -> str:
        """The identity of the archive holding `epoch` (one HEAD or stat, and its header's root CID):
        `root=…;size=…;etag=…;modified=…`. A scan records it per sub-range; a different value later
        means the archive was rebuilt, and what was scanned from the old one is stale."""
        import base64

        car = self.car_file(epoch if self.is_template else None)
        parts = dict(car.source.identity())
        roots = car.header().roots
        parts["root"] = ("b" + base64.b32encode(bytes(roots[0])).decode().lower().rstrip("=")) if roots else ""
        return ";".join(f"{k}={parts[k]}" for k in ("root", "size", "etag", "modified") if parts.get(k))

    def preflight(self, first_slot: int | None = None, **options) -> None:
        """Fail fast, before any work: check (one HEAD, short timeouts, no retries; for a local path,
        that the file exists) the archive holding `first_slot` (its epoch's, for a template). Raises
        SourceError naming the location and the cause. `options`: connect_timeout, answer_timeout."""
        if self.is_template:
            if first_slot is None:
                raise ValueError("a location template with {epoch} needs a first slot to preflight")
            location = self.location_for(epoch_of(first_slot))
        else:
            location = self.location
        preflight(location, **{**(self.http_options or {}), **options})

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]:
        if first_slot > last_slot:
            raise ValueError(f"first slot {first_slot} is after last slot {last_slot}")
        if not self.is_template:
            yield from self.car_file().iter_slots(first_slot, last_slot, use_index=self.use_index)
            return
        for epoch, part in SlotRange(first_slot, last_slot).split_by_epoch():
            car = self.car_file(epoch)
            if not car.source.exists():
                raise MissingArchive(f"{car.name}: not found (epoch {epoch}, slots {part})",
                                      part.first_slot - 1)
            yield from car.iter_slots(part.first_slot, part.last_slot, use_index=self.use_index)
