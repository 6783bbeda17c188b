"""The `iq-etl` command line: thin commands over the stages."""
