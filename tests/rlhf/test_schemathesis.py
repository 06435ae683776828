"""Every service's OpenAPI, fuzzed with schemathesis against the running service (the stack's real
processes on the real PostgreSQL and broker), with an admin key of a throw-away organization:
no answer is a server error, and every answer's status and body are the ones the document declares."""

import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.openapi import service_documents
from shared import auth
from shared.service import load_specs

SPECS = list(load_specs().values())
DOCUMENTS = dict(zip((spec.name for spec in SPECS), service_documents(), strict=True))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = {"seed": 13, "generation": {"max-examples": 20, "database": "none"}}
BOUNDED = settings(max_examples=20, derandomize=True, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
async def admin(engine) -> dict[str, str]:
    organization = f"fuzz-{uuid.uuid4().hex[:10]}"
    return {"Authorization": f"Bearer {await auth.create_key(engine, organization=organization, role=auth.Role.admin)}"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_service_serves_the_document_fuzzed_here(stack, spec):
    served, built = httpx.get(f"{stack.url_of(spec)}/openapi.json").json(), DOCUMENTS[spec.name]
    assert (served["paths"], served["components"]) == (built["paths"], built["components"])


def fuzz(spec):
    schema = schemathesis.openapi.from_dict(DOCUMENTS[spec.name],
                                            config=schemathesis.config.SchemathesisConfig.from_dict(CONFIG))

    @schema.parametrize()
    @BOUNDED
    def test(case, stack, admin):
        case.call_and_validate(base_url=stack.url_of(spec), headers=admin, checks=CHECKS)

    return test


for _spec in SPECS:
    globals()[f"test_{_spec.name}_conforms_to_its_openapi"] = fuzz(_spec)
