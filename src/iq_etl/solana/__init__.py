"""Shared Solana chain vocabulary (blocks, transactions, slot specs and range arithmetic). No I/O."""
