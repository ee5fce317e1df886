"""Alembic environment of the public database (run through :func:`verify_api.storage.db.upgrade_public`)."""

from issuer.storage.db import run_alembic_env
from verify_api.storage.models import import_all_models

run_alembic_env(import_all_models())
