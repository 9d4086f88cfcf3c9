"""The PostgreSQL state backend (``[state] url = "postgresql://..."``): a pooled asyncpg database,
schema migrations applied under an advisory lock, and the catalog, file bytes, parked turns and
locks every instance of a deployment shares."""
