"""Prefect flows and deployments around the stages; nothing on the data path imports this."""
