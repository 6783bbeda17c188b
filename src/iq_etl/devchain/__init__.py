"""Development chain: synthetic Solana history and the loopback servers that serve it."""
