"""Alembic environment: migrations run against the URL that ``pipeline.store.db`` passes in."""

from __future__ import annotations

from alembic import context

from pipeline.store import db

config = context.config


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    connectable = db.engine(url)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=db.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
