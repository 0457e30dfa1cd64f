"""Alembic migrations (installed as aiposter.migrations). The schema changes only through these."""
