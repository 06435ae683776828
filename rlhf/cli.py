"""The `rlhf` command: run the stack, manage API keys, migrate, benchmark."""

import asyncio
import os
from enum import StrEnum
from pathlib import Path

import typer

from shared import auth
from shared.db import make_engine
from shared.infra import start_postgres


class RoleName(StrEnum):
    viewer = "viewer"
    curator = "curator"
    admin = "admin"


app = typer.Typer(help="Betabase RLHF: human feedback in, better models out.", no_args_is_help=True)
keys = typer.Typer(help="API keys (each carries an organization and a role).", no_args_is_help=True)
bench = typer.Typer(help="Benchmarks, each printed next to raw baselines from the same run.", no_args_is_help=True)
app.add_typer(keys, name="keys")
app.add_typer(bench, name="bench")
datasets = typer.Typer(help="Training datasets (the curation service, through the gateway).", no_args_is_help=True)
app.add_typer(datasets, name="datasets")


def _data_dir() -> Path:
    return Path(os.environ.get("RLHF_DATA_DIR", ".rlhf"))


def _database_url() -> tuple[str, object | None]:
    """DATABASE_URL, or the embedded server in RLHF_DATA_DIR (joined if `rlhf up` is running)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    server = start_postgres(_data_dir())
    return server.get_uri(), server


@app.command()
def up(
    port: int = typer.Option(8000, help="gateway port"),
    services_port: int | None = typer.Option(
        None, help="port of the first service; the others follow (default: each service's own port, 8001...)"
    ),
    kafka_port: int = typer.Option(19092, help="port of the embedded broker (when KAFKA_BOOTSTRAP_SERVERS is unset)"),
) -> None:
    """Run every service and the gateway (embedded PostgreSQL and Kafka unless configured)."""
    from rlhf.stack import up as run_up

    run_up(_data_dir(), gateway_port=port, services_port=services_port, kafka_port=kafka_port)


@app.command()
def migrate() -> None:
    """Apply every service's database migrations."""
    from rlhf.stack import migrate_all

    url, _server = _database_url()
    asyncio.run(migrate_all(url))
    typer.echo("migrations applied")


@keys.command("create")
def create_key(
    org: str = typer.Option(..., "--org", help="organization the key acts for"),
    role: RoleName = typer.Option(..., "--role", help="viewer, curator or admin", case_sensitive=False),
    name: str | None = typer.Option(None, "--name", help="a label to recognise the key by"),
) -> None:
    """Create an API key and print it (it is stored hashed and cannot be shown again)."""
    from shared.migrations import upgrade
    from shared.service import AUTH_MIGRATIONS

    url, _server = _database_url()

    async def run() -> str:
        engine = make_engine(url, pool_size=1)
        try:
            await upgrade(engine, metadata=auth.metadata, versions=AUTH_MIGRATIONS)
            return await auth.create_key(engine, organization=org, role=auth.Role[role.value], name=name)
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(run()))


@bench.command("ingest")
def bench_ingest(
    batches: int = typer.Option(40, help="batch requests of 1,000 items"),
    singles: int = typer.Option(2000, help="single POST requests"),
) -> None:
    """Feedback ingest throughput and latency, next to raw asyncpg / aiokafka / FastAPI baselines."""
    from bench.ingest import main as run_bench

    run_bench(batches=batches, singles=singles)


@datasets.command("export")
def export_dataset(
    dataset_id: str = typer.Argument(..., help="the dataset's id"),
    fmt: str = typer.Option(..., "--format", help="openai_sft, openai_dpo, anthropic, bedrock_claude, trl_dpo, "
                                                 "parquet or jsonl"),
    out: Path = typer.Option(..., "--out", help="where to write the training file"),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="the gateway's base URL"),
    key: str | None = typer.Option(None, "--key", envvar="RLHF_API_KEY", help="API key (or RLHF_API_KEY)"),
) -> None:
    """Export a dataset (a new immutable version) and download its training file."""
    from rlhf.datasets_cli import export_and_download

    if not key:
        raise typer.BadParameter("an API key is needed: --key or RLHF_API_KEY", param_hint="--key")
    export_and_download(url, key, dataset_id, fmt, out)


if __name__ == "__main__":
    app()

