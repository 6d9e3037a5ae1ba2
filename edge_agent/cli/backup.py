"""`edge-agent backup PATH`: an online copy of the database, safe while the daemon runs."""

from __future__ import annotations

import click

from .root import emit, json_option, main


@main.command()
@click.argument("path", type=click.Path())
@click.option("--db", "db_path", default=None,
              help="Database file (default: the one in the configuration).")
@json_option
def backup(path: str, db_path: str | None, as_json: bool) -> None:
    """Copy the database to PATH (a file, or a directory to put it in) while the daemon keeps
    running: SQLite's backup API takes a consistent snapshot.  Restore: docs/deployment.md."""
    from edge_agent.store.database import backup_database

    if db_path is None:
        from .state import current_config

        db_path = current_config().database
    target = backup_database(db_path, path)
    size = target.stat().st_size
    emit({"backup": str(target), "bytes": size}, as_json,
         lambda: click.echo(f"backed up {db_path} to {target} ({size} bytes)"))
