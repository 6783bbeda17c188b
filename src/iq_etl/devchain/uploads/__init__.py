"""IQ uploads for the development chain: every generation the decoders support, and the hard cases.

A scenario plays one upload the way a client would: it picks a file, splits it, signs real
transactions (legacy or v0, sometimes through a lookup table or a CPI) carrying instructions encoded
with `iq_etl.protocol.encode`, and places them in slots. The `UploadState` remembers what was sent
(index → payload copies, which transactions failed, where the finalize landed), and `finish()`
turns that into the manifest entry: expected status, missing indexes and content hashes computed
from what the generator sent, never from iq-etl's decoding.

Each catalogue scenario is one deliberate hard case; `ordinary_upload` fills the rest of --sessions
with plain uploads of every generation.

Modules, each importing only those before it: `state` (programs, timeline, hard-case names, what an
upload sent), `planner` (`UploadPlanner`: signs, places and finishes transactions), `files` (file
bytes, splitting, Merkle roots, metadata), `accounts` (instruction account layouts), `scenarios`
(upload builders per generation) and `catalogue` (the hard cases and `ordinary_upload`).
"""
