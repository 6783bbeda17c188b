"""The CAR chain source: routes a slot range to the epoch archives that hold it (path, folder template
with `{epoch}`, or HTTP) and yields its blocks through the reader."""
from __future__ import annotations

import logging
from typing import Collection, Iterator

from iq_etl.errors import SourceError, SourceMissing
from iq_etl.ingest.sources.car.byte_range import READ_SIZE, preflight, redact_location
from iq_etl.ingest.sources.car.reader import CarFile, MissingArchive
from iq_etl.solana.model import ChainBlock
from iq_etl.solana.slots import SlotRange, epoch_of

log = logging.getLogger(__name__)

DEFAULT_LOCATION = "https://files.old-faithful.net/{epoch}/epoch-{epoch}.car"


MIRROR_SEPARATOR = "|"
MIRROR_FAILURES = 3        # a mirror that cannot be reached this many times in a row is left for the next
_MIRROR_FAILED: dict[str, int] = {}   # process-wide: template -> failures in a row


class CarSource:
    """Blocks from Old Faithful CARs. `location` is a path, an http(s) URL, or a template containing
    `{epoch}` (e.g. `/data/{epoch}/epoch-{epoch}.car`, default the public Old Faithful bucket).

    Mirrors: several templates separated by `|` (a private mirror first, the public host after). Per
    epoch the first that serves it is used (one quick check each, remembered); one that answers "not
    found" is passed over for that epoch; one that cannot be reached MIRROR_FAILURES times in a row is
    left for the others for the rest of the process (said once)."""

    def __init__(self, location: str = DEFAULT_LOCATION, *, wanted_keys: Collection[bytes] | None = None,
                 use_index: bool = True, read_size: int = READ_SIZE, verify_cids: bool = False,
                 http_options: dict | None = None):
        """http_options: passed to HttpSource for URLs (retries, backoff, timeout, deadline, session)."""
        self.locations = [part.strip() for part in str(location).split(MIRROR_SEPARATOR) if part.strip()] or [""]
        self.location = self.locations[0]
        self._chosen: dict[int, str] = {}
        self.http_options = http_options
        self.wanted_keys = wanted_keys
        self.use_index = use_index
        self.read_size = read_size
        self.verify_cids = verify_cids
        self.is_template = "{epoch}" in self.location
        if len(self.locations) > 1 and not all("{epoch}" in part for part in self.locations):
            raise SourceError(f"CAR location {str(location)!r}: mirrors (separated by {MIRROR_SEPARATOR}) must all "
                              "be templates with {epoch}")

    def location_for(self, epoch: int) -> str:
        if not self.is_template:
            return self.location
        if len(self.locations) == 1:
            return self.location.replace("{epoch}", str(epoch))
        if epoch not in self._chosen:
            self._chosen[epoch] = self._mirror_for(epoch)
        return self._chosen[epoch]

    def _mirror_for(self, epoch: int) -> str:
        """The first mirror that serves `epoch` (see the class docstring); the first one's location when
        none does (the scan then reports the archive missing, naming it)."""
        for template in self.locations:
            if _MIRROR_FAILED.get(template, 0) >= MIRROR_FAILURES:
                continue
            location = template.replace("{epoch}", str(epoch))
            try:
                preflight(location, **(self.http_options or {}))
            except SourceMissing:
                continue
            except SourceError as exc:
                _MIRROR_FAILED[template] = _MIRROR_FAILED.get(template, 0) + 1
                if _MIRROR_FAILED[template] == MIRROR_FAILURES:
                    log.warning("CAR mirror %s failed %d times in a row (%s): left for the next mirror(s) for the "
                                "rest of this run", redact_location(template), MIRROR_FAILURES, exc)
                continue
            _MIRROR_FAILED[template] = 0
            if template != self.locations[0]:
                log.info("epoch %d: read from mirror %s", epoch, redact_location(template))
            return location
        return self.locations[0].replace("{epoch}", str(epoch))

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

    def seekable(self, epoch: int, first_slot: int) -> bool:
        """Whether `epoch`'s archive has an index to seek with (slot-ranges.raw or the compact pair): one
        small lookup. Without one every sub-range reads the archive from its start, so the ingest plan
        reads such an epoch in one pass instead."""
        return self.car_file(epoch).slot_span(first_slot, first_slot) is not None

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
