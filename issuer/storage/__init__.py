"""Persistence of the issuer: models, engine/migrations, repository functions."""
