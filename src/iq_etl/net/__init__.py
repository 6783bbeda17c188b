"""The network layer shared by the three HTTP clients (the RPC client, the CAR byte-range reader and the
export target): URL redaction (`redact`), naming a network failure (`errors`), retry delays and
Retry-After (`retry`), and the wall-clock deadline of one HTTP exchange (`deadline`).

The bottom floor: it imports nothing from iq_etl. Each client keeps its own policy values (how often,
how patiently) as named constants beside its code; only the mechanisms live here."""
