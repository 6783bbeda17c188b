"""Stage 1: chain history (CAR archives, JSON-RPC) to IQ instruction rows. Never imports devchain, orchestration or cli."""
