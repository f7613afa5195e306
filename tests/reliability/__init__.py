"""The reliability suite: real Hypercorn, real PostgreSQL; figures in reports/reliability.md."""
