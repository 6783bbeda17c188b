"""Solana JSON-RPC: the bounded client, block/transaction conversion, and the block, signature and discovery sources."""
