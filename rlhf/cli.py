"""The `rlhf` command: run the stack, manage API keys, migrate, benchmark."""

import asyncio
import os
from enum import StrEnum
from pathlib import Path

import typer

from shared import auth
from shared.errors import DomainError
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


URL_OPTION = typer.Option("http://127.0.0.1:8000", "--url", envvar="RLHF_URL",
                          help="the running stack's gateway (or RLHF_URL)")
ADMIN_KEY_OPTION = typer.Option(None, "--key", envvar="RLHF_API_KEY",
                                help="an admin key of the organization, when a stack answers (or RLHF_API_KEY)")
DIRECT_OPTION = typer.Option(False, "--direct",
                             help="work on the database (DATABASE_URL or the embedded one in RLHF_DATA_DIR) even "
                                  "when a stack answers: the operator's way to make a new organization's first key")
EXPIRES_AT_OPTION = typer.Option(None, "--expires-at", help="when the key stops working (ISO 8601; no zone: UTC)")
EXPIRES_IN_OPTION = typer.Option(None, "--expires-in", help="or how long from now: 90d, 12h, 30m, 45s")


@keys.command("create")
def create_key(
    org: str | None = typer.Option(None, "--org", help="organization the key acts for (a slug: a-z, 0-9, '-'); "
                                                        "through the stack, your admin key's own"),
    role: RoleName = typer.Option(..., "--role", help="viewer, curator or admin", case_sensitive=False),
    name: str | None = typer.Option(None, "--name", help="a label to recognise the key by"),
    expires_at: str | None = EXPIRES_AT_OPTION,
    expires_in: str | None = EXPIRES_IN_OPTION,
    url: str = URL_OPTION,
    key: str | None = ADMIN_KEY_OPTION,
    direct: bool = DIRECT_OPTION,
) -> None:
    """Create an API key and print it (it is stored hashed and cannot be shown again)."""
    from rlhf import keys_cli

    if org is not None:
        try:
            auth.check_organization(org)
        except DomainError as exc:
            raise typer.BadParameter(exc.message, param_hint="--org") from exc
    when = keys_cli.expiry(expires_at, expires_in)
    made = keys_cli.target(url, key, direct).create(org, role.value, name, when)
    typer.echo(f"{keys_cli.describe(made)} (shown once, stored hashed):", err=True)
    typer.echo(made["key"])


@keys.command("list")
def list_keys(
    org: str | None = typer.Option(None, "--org", help="only this organization's (on the database: default all)"),
    status: str | None = typer.Option(None, "--status", help="active, revoked or expired"),
    url: str = URL_OPTION,
    key: str | None = ADMIN_KEY_OPTION,
    direct: bool = DIRECT_OPTION,
) -> None:
    """List keys (never their secrets): id, organization, role, status, name, created, expires."""
    from rlhf import keys_cli

    if status is not None and status not in ("active", "revoked", "expired"):
        raise typer.BadParameter("active, revoked or expired", param_hint="--status")
    keys_cli.print_keys(keys_cli.target(url, key, direct).list_keys(org, status))


@keys.command("revoke")
def revoke_key(
    key_id: str = typer.Argument(..., help="the key's id (what `rlhf keys list` shows; the part after rlhf_)"),
    url: str = URL_OPTION,
    key: str | None = ADMIN_KEY_OPTION,
    direct: bool = DIRECT_OPTION,
) -> None:
    """Revoke a key: every service refuses it within a second."""
    from rlhf import keys_cli

    revoked = keys_cli.target(url, key, direct).revoke(key_id)
    typer.echo(f"revoked {keys_cli.describe(revoked)}")


@keys.command("rotate")
def rotate_key(
    key_id: str = typer.Argument(..., help="the key to replace"),
    expires_at: str | None = EXPIRES_AT_OPTION,
    expires_in: str | None = EXPIRES_IN_OPTION,
    url: str = URL_OPTION,
    key: str | None = ADMIN_KEY_OPTION,
    direct: bool = DIRECT_OPTION,
) -> None:
    """A new key with the same name and role, printed once; the old one is revoked."""
    from rlhf import keys_cli

    made = keys_cli.target(url, key, direct).rotate(key_id, keys_cli.expiry(expires_at, expires_in))
    typer.echo(f"revoked {key_id}; its replacement is {keys_cli.describe(made)} (shown once, stored hashed):",
               err=True)
    typer.echo(made["key"])


@keys.command("audit")
def audit_keys(
    key_id: str | None = typer.Option(None, "--key-id", help="only this key's entries"),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    url: str = URL_OPTION,
    key: str | None = ADMIN_KEY_OPTION,
    direct: bool = DIRECT_OPTION,
) -> None:
    """Who created, rotated and revoked which keys, newest first."""
    from rlhf import keys_cli

    keys_cli.print_audit(keys_cli.target(url, key, direct).audit(key_id, limit))


@bench.command("ingest")
def bench_ingest(
    batches: int = typer.Option(80, help="batch requests of 1,000 items"),
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

