"""Peers of the service: the same three endpoints and JSON, on other stacks (bench/README.md)."""
