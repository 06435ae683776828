"""`rlhf datasets export`: asks the curation service (through the gateway) for an export, then
downloads the training file with a progress bar and checks its sha256."""

import hashlib
import os
from pathlib import Path

import httpx
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn


def _fail(response: httpx.Response) -> None:
    try:
        body = response.json()
        detail = body.get("message", "") + "".join(f"\n  {e['field']}: {e['message']}" for e in body.get("errors", []))
    except ValueError:
        detail = response.text
    typer.secho(f"error {response.status_code}: {detail}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def check_writable(out: Path) -> None:
    """Refuse before anything is exported: an export made for a file that cannot be written would
    still become the dataset's newest version (the default for launches)."""
    folder = out.parent
    problem = None
    if out.is_dir():
        problem = f"{out} is a directory; give a file name"
    elif not folder.is_dir():
        problem = f"the folder {folder} does not exist"
    elif not os.access(folder, os.W_OK):
        problem = f"the folder {folder} is not writable"
    if problem:
        typer.secho(f"cannot write the export: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


def export_and_download(base_url: str, key: str, dataset_id: str, fmt: str, out: Path) -> None:
    check_writable(out)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(30, read=None)) as client:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True) as spinner:
            spinner.add_task(f"exporting {dataset_id} as {fmt}…")
            response = client.post(f"/api/training-datasets/{dataset_id}/export", json={"format": fmt})
        if response.status_code != 201:
            _fail(response)
        export = response.json()
        manifest = client.get(export["manifest_url"])  # the answer's download URLs, through the API
        if manifest.status_code != 200:
            _fail(manifest)
        total = manifest.json()["files"]["train"]["bytes"]
        digest = hashlib.sha256()
        tmp = out.with_name(out.name + ".part")
        path = export["url"]
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with client.stream("GET", path) as stream, tmp.open("wb") as f, Progress(*columns) as progress:
            if stream.status_code != 200:
                stream.read()
                _fail(stream)
            task = progress.add_task(f"v{export['version']} {out.name}", total=total)
            for chunk in stream.iter_bytes(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                progress.update(task, advance=len(chunk))
        if digest.hexdigest() != export["sha256"]:
            tmp.unlink(missing_ok=True)
            typer.secho("download does not match the export's sha256", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        tmp.replace(out)
    counts = export["counts"]
    typer.echo(f"{out}: export v{export['version']} ({fmt}), {counts['train']} train / {counts['validation']} "
               f"validation examples, sha256 {export['sha256']}")
