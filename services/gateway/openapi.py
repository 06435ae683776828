"""One OpenAPI document for the whole product: every service's, merged. The gateway serves it at
/docs, and the UI's API client is generated from it (`python -m services.gateway.openapi`), so a
renamed field breaks the UI's build rather than a user's screen."""

import argparse
import json
import sys
from pathlib import Path

from fastapi import FastAPI

TITLE = "Betabase RLHF API"


class ConflictingSchema(Exception):
    """Two services name different shapes alike: the merged document would be wrong."""


def merge(documents: list[dict], *, title: str = TITLE, version: str = "1") -> dict:
    """Paths and component schemas of every document in one. Services own disjoint path prefixes;
    a schema name two services share must describe the same shape."""
    paths: dict = {}
    schemas: dict = {}
    tags: dict[str, dict] = {}
    for doc in documents:
        for path, item in doc.get("paths", {}).items():
            paths.setdefault(path, {}).update(item)
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ConflictingSchema(f"schema {name!r} differs between services")
            schemas[name] = schema
        for tag in doc.get("tags", []):
            tags.setdefault(tag["name"], tag)
    merged = {
        "openapi": documents[0]["openapi"] if documents else "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "rlhf_<id>_<secret>"}},
        },
        "security": [{"apiKey": []}],
    }
    if tags:
        merged["tags"] = list(tags.values())
    return merged


def service_documents() -> list[dict]:
    """Each service's OpenAPI, built from its routers in this process (no database needed)."""
    from shared.service import load_specs

    documents = []
    for spec in load_specs().values():
        app = FastAPI(title=spec.name)
        for router in spec.routers:
            app.include_router(router)
        documents.append(app.openapi())
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the product's merged OpenAPI document")
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args()
    text = json.dumps(merge(service_documents()), indent=1, sort_keys=False) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
