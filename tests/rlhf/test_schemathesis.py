"""Every service's OpenAPI, fuzzed with schemathesis against the running service (the stack's real
processes on the real PostgreSQL and broker) with an admin key of a throw-away organization: no
answer is a server error, and every answer's status, content type and body are the ones the
service's document declares (issue 13).

Seeded and bounded: each operation gets the same EXAMPLES cases on every run. So that the cases
reach past "404 not found", the organization first gets one thing of each kind (feedback, a
dataset with a pair, two versions of a model, an experiment between them, a second key), and an
id the fuzzer generates for a path parameter or a body field is replaced by that real one."""

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

from services.gateway.openapi import merge, service_documents
from shared import auth
from shared.service import load_specs
from tests.support import eventually

SPECS = list(load_specs().values())
DOCUMENTS = dict(zip((spec.name for spec in SPECS), service_documents(), strict=True))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 20
CONFIG = {"seed": 13, "generation": {"max-examples": EXAMPLES, "database": "none"}}
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck))
# Not pointed at the real dataset: a launch on it could start a real (local) fine-tuning run. Its
# cases still reach the launch's checks (provider, model, hyperparameters) and its 404.
RANDOM_DATASET = {("POST", "/api/fine-tuning/jobs")}


@pytest.fixture(scope="module")
async def admin(engine) -> dict[str, str]:
    organization = f"fuzz-{uuid.uuid4().hex[:10]}"
    return {"Authorization": f"Bearer {await auth.create_key(engine, organization=organization, role=auth.Role.admin)}"}


@pytest.fixture(scope="module")
async def real_ids(stack, admin) -> dict[str, str]:
    """One thing of each kind in the organization: parameter or field name -> its id."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=admin, timeout=30) as api:
        async def made(path: str, body: dict) -> dict:
            answer = await api.post(path, json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()

        feedback = await made("/api/feedback", {"query": "How do I deploy?", "response": "Click deploy.",
                                                "feedback_type": "thumbs_down"})
        dataset = await made("/api/training-datasets", {"name": "fuzzed", "dataset_type": "preference_pairs"})
        pair = await made("/api/preference-pairs", {"dataset_id": dataset["id"], "query": "q?",
                                                    "chosen_response": "good", "rejected_response": "bad"})
        serving = {"kind": "openai", "model": "ft:gpt-4o-mini:fuzz"}
        control, treatment = [await made("/api/models", {"name": "fuzz-bot", "model_id": f"ft:m{n}",
                                                         "base_model": "gpt-4o-mini", "serving": serving})
                              for n in (1, 2)]

        async def experiment():  # once the experiments service has heard of both versions
            answer = await api.post("/api/experiments", json={
                "name": "fuzz", "control_model_id": control["id"], "treatment_model_id": treatment["id"],
                "success_metrics": [{"name": "thumbs_up_rate"}], "start": False})
            assert answer.status_code in (201, 404, 422), answer.text
            return answer.json() if answer.status_code == 201 else None

        created = await eventually(experiment)
        key = await made("/api/keys", {"role": "viewer", "name": "fuzzed"})
    return {"feedback_id": feedback["ids"][0], "dataset_id": dataset["id"], "pair_id": pair["id"],
            "model_version_id": control["id"], "control_model_id": control["id"],
            "treatment_model_id": treatment["id"], "experiment_id": created["id"], "key_id": key["key_id"]}


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def point_at_real_things(case, real_ids: dict[str, str]) -> None:
    """Generated ids (well-formed ones: malformed ones stay, for the 422s) become the real ones."""
    for name, value in (case.path_parameters or {}).items():
        if name in real_ids and (_is_uuid(value) or name == "key_id"):
            case.path_parameters[name] = real_ids[name]
    if isinstance(case.body, dict) and (case.method.upper(), case.path) not in RANDOM_DATASET:
        for name, value in case.body.items():
            if name in real_ids and _is_uuid(value):
                case.body[name] = real_ids[name]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_service_serves_the_document_fuzzed_here(stack, spec):
    served, built = httpx.get(f"{stack.url_of(spec)}/openapi.json").json(), DOCUMENTS[spec.name]
    assert (served["paths"], served["components"]) == (built["paths"], built["components"])


def test_the_gateway_serves_the_merge_of_these_documents(stack):
    """What the gateway documents at /openapi.json (and the UI's types are generated from)."""
    assert httpx.get(f"{stack.gateway_url}/openapi.json").json() == merge(list(DOCUMENTS.values()))


def test_enums_of_the_code_are_enums_and_numbers_are_numbers_in_the_documents():
    schemas = {name: schema for doc in DOCUMENTS.values() for name, schema in doc["components"]["schemas"].items()}
    assert schemas["JobCreate"]["properties"]["provider"]["enum"] == ["openai", "bedrock", "huggingface"]
    assert schemas["BudgetSet"]["properties"]["monthly_limit"]["type"] == "number"
    assert "openai_dpo" in schemas["ExportRequest"]["properties"]["format"]["enum"]
    jobs = DOCUMENTS["training"]["paths"]["/api/fine-tuning/jobs"]["get"]["parameters"]
    provider = next(p for p in jobs if p["name"] == "provider")
    assert provider["schema"]["anyOf"][0]["enum"] == ["openai", "bedrock", "huggingface"]


def fuzz(spec):
    schema = schemathesis.openapi.from_dict(DOCUMENTS[spec.name],
                                            config=schemathesis.config.SchemathesisConfig.from_dict(CONFIG))

    @schema.parametrize()
    @BOUNDED
    def test(case, stack, admin, real_ids):
        point_at_real_things(case, real_ids)
        case.call_and_validate(base_url=stack.url_of(spec), headers=admin, checks=CHECKS)

    test.__doc__ = f"The {spec.name} service answers as its OpenAPI says, whatever it is sent."
    return test


for _spec in SPECS:
    globals()[f"test_{_spec.name}_conforms_to_its_openapi"] = fuzz(_spec)
