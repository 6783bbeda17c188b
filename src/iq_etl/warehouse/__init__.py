"""Stage 2: the ClickHouse warehouse (embedded chDB or remote): client, migrations, row writer, scan ledger, cursors, shared SQL."""
