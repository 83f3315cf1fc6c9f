"""Alembic migration scripts, installed as `worker.migrations` (see setup.py); run by `worker.store.migrations`."""
