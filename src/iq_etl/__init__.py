"""iq-etl: recover IQ Labs on-chain uploads from Solana history, validate them in ClickHouse, deliver them."""
