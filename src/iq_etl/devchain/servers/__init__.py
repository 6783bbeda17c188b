"""Loopback servers for development and tests: JSON-RPC, CAR files over HTTP, the reader backend."""
