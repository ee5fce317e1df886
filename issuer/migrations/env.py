"""Alembic environment of the supplier's database (run through :func:`issuer.storage.db.upgrade`)."""

from issuer.storage.db import run_alembic_env
from issuer.storage.models import import_all_models

run_alembic_env(import_all_models())
