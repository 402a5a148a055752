"""SQLAlchemy tables, engine set-up, repositories and Alembic migrations."""
