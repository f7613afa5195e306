"""Database queries, one module per resource; each function takes the session it runs in."""
