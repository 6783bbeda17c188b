"""Chain sources: Old Faithful CAR (file or HTTP) and Solana JSON-RPC. A source yields blocks of
transactions (see model.py); it knows nothing of IQ beyond an optional key pre-filter."""
