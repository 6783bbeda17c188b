"""One module per `iq-etl` command; each exposes `register(subparsers)` and sets `handler`."""
