"""The benchmark harness: the service against its peers on the same PostgreSQL and data."""
