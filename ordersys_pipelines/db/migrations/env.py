"""Alembic environment: the URL comes from the caller (settings), never from an ini file."""

from alembic import context

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import metadata

config = context.config
url = config.attributes.get("database_url")
if url is None:
    from ordersys_pipelines.settings import get_settings

    url = get_settings().database_url

engine = get_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
