"""Reconciliation: plan wider scans for incomplete uploads and remember what was tried."""
