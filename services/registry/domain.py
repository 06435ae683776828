"""Pure rules of the model registry: version numbers, statuses and their moves, how to call a
version (`serving`), the evaluation gate of a deploy. No I/O."""

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.errors import Conflict, DomainError, Invalid, NotFound

TESTING, DEPLOYED, DEPRECATED, ARCHIVED = "testing", "deployed", "deprecated", "archived"
STATUSES = (TESTING, DEPLOYED, DEPRECATED, ARCHIVED)

SEMVER = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
BEDROCK_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:\d{12}:[a-z-]+/[A-Za-z0-9._:/-]+$")
SERVING_KINDS = ("openai", "openai_compatible", "bedrock", "local")


class ModelNotFound(NotFound):
    def __init__(self, model_version_id):
        super().__init__(f"model version {model_version_id} not found")


class GateRefused(DomainError):
    """The version fails the evaluation gate: no evaluation, or the organization's deploy policy."""

    status, code = 409, "evaluation_gate"

    def __init__(self, reasons: list[str]):
        super().__init__("deploy refused: " + "; ".join(reasons) + " (an admin may override with force and a reason)",
                         reasons=reasons)
        self.reasons = reasons


# ---- versions ----------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str, *, field_name: str = "version") -> Version:
    match = SEMVER.match(text or "")
    if not match:
        raise Invalid(field_name, f"{text!r} is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.2.0)")
    return Version(*(int(g) for g in match.groups()))


FIRST = Version(1, 0, 0)


def next_version(latest: Version | None, latest_base_model: str | None, base_model: str) -> Version:
    """A new name starts at 1.0.0; a new fine-tune of the same base model bumps the minor; a
    different base model than the name's latest version bumps the major."""
    if latest is None:
        return FIRST
    if latest_base_model == base_model:
        return Version(latest.major, latest.minor + 1, 0)
    return Version(latest.major + 1, 0, 0)


def check_patch_bump(current: Version, wanted: Version) -> None:
    """A PATCH may only raise the patch number of a version (same major and minor)."""
    if (wanted.major, wanted.minor) != (current.major, current.minor) or wanted.patch <= current.patch:
        raise Invalid("version", f"a patch may only raise {current}'s patch number (e.g. "
                                 f"{Version(current.major, current.minor, current.patch + 1)}); got {wanted}")


# ---- status moves ------------------------------------------------------------------------------

def check_deployable(name: str, version: str, status: str) -> None:
    if status == ARCHIVED:
        raise Conflict(f"{name} {version} is archived and cannot be deployed")
    if status == DEPLOYED:
        raise Conflict(f"{name} {version} is already deployed")


def check_archivable(name: str, version: str, status: str) -> None:
    if status == DEPLOYED:
        raise Conflict(f"{name} {version} is deployed; deploy or roll back to another version before archiving it")
    if status == ARCHIVED:
        raise Conflict(f"{name} {version} is already archived")


# ---- serving -----------------------------------------------------------------------------------

def check_serving(serving: dict[str, Any]) -> dict[str, Any]:
    """The one shape of each kind; returns it normalised. Secrets are refused: a credential is
    named by the environment variable that holds it (`api_key_env`), never given."""
    kind = serving.get("kind")
    if kind not in SERVING_KINDS:
        raise Invalid("serving.kind", f"serving.kind must be one of {', '.join(SERVING_KINDS)}")
    allowed = {"openai": {"kind", "model"},
               "openai_compatible": {"kind", "base_url", "model", "api_key_env"},
               "bedrock": {"kind", "model_arn", "region"},
               "local": {"kind", "base_model", "adapter_url"}}[kind]
    unknown = sorted(set(serving) - allowed)
    if unknown:
        hint = " (credentials are named by api_key_env, never stored)" if any("key" in u or "secret" in u
                                                                              for u in unknown) else ""
        raise Invalid(f"serving.{unknown[0]}", f"{kind} serving does not take {', '.join(unknown)}{hint}")

    def text(name: str, max_length: int = 500) -> str:
        value = serving.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise Invalid(f"serving.{name}", f"{kind} serving needs {name} (text, 1-{max_length} characters)")
        return value.strip()

    out: dict[str, Any] = {"kind": kind}
    if kind == "openai":
        out["model"] = text("model")
    elif kind == "openai_compatible":
        base_url = text("base_url", 2000)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Invalid("serving.base_url", f"serving.base_url must be an http(s) URL; got {base_url!r}")
        if parts.username or parts.password:
            raise Invalid("serving.base_url", "serving.base_url may not carry credentials; use api_key_env")
        out.update(base_url=base_url, model=text("model"))
        if serving.get("api_key_env") is not None:
            env = serving["api_key_env"]
            if not isinstance(env, str) or not ENV_NAME.match(env):
                raise Invalid("serving.api_key_env",
                              "serving.api_key_env is the NAME of an environment variable (e.g. VLLM_API_KEY)")
            out["api_key_env"] = env
    elif kind == "bedrock":
        arn = text("model_arn", 2048)
        if not BEDROCK_ARN.match(arn):
            raise Invalid("serving.model_arn", f"serving.model_arn must be a Bedrock model ARN; got {arn!r}")
        out["model_arn"] = arn
        if serving.get("region") is not None:
            out["region"] = text("region", 50)
    else:
        out["base_model"] = text("base_model", 2000)
        adapter_url = text("adapter_url", 2000)
        if urlsplit(adapter_url).scheme not in ("file", "s3"):
            raise Invalid("serving.adapter_url", "serving.adapter_url must be an object-store URL (file:// or s3://)")
        out["adapter_url"] = adapter_url
    return out


def serving_from_job(provider: str, base_model: str, resulting_model_id: str) -> dict[str, Any]:
    """How to call what a job produced, from its provider."""
    if provider == "openai":
        return {"kind": "openai", "model": resulting_model_id}
    if provider == "bedrock":
        return {"kind": "bedrock", "model_arn": resulting_model_id}
    return {"kind": "local", "base_model": base_model, "adapter_url": resulting_model_id}


# ---- the evaluation gate -------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """An organization's deploy policy. Unset thresholds are not checked; an evaluation is
    required unless `require_evaluation` is off."""

    require_evaluation: bool = True
    min_preference_accuracy: float | None = None
    min_reward_margin: float | None = None
    max_eval_loss: float | None = None
    min_token_accuracy: float | None = None
    max_leak_findings: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def gate(evaluation: dict[str, Any] | None, policy: Policy) -> list[str]:
    """Why a version with this evaluation may not be deployed under this policy ([] = it may)."""
    if not evaluation:
        return ["the version has no evaluation"] if policy.require_evaluation else []
    reasons: list[str] = []

    def at_least(key: str, label: str, minimum: float | None) -> None:
        if minimum is None:
            return
        value = evaluation.get(key)
        if not isinstance(value, int | float):
            reasons.append(f"the evaluation has no {label} (the policy requires at least {minimum})")
        elif value < minimum:
            reasons.append(f"{label} {value:.4g} is below the policy's minimum {minimum}")

    at_least("preference_accuracy", "preference accuracy", policy.min_preference_accuracy)
    at_least("reward_margin", "mean reward margin", policy.min_reward_margin)
    at_least("token_accuracy", "token accuracy", policy.min_token_accuracy)
    if policy.max_eval_loss is not None:
        loss = evaluation.get("eval_loss", evaluation.get("validation_loss"))
        if not isinstance(loss, int | float):
            reasons.append(f"the evaluation has no validation loss (the policy allows at most {policy.max_eval_loss})")
        elif loss > policy.max_eval_loss:
            reasons.append(f"validation loss {loss:.4g} is above the policy's maximum {policy.max_eval_loss}")
    if policy.max_leak_findings is not None:
        leak = evaluation.get("leak_check")
        if not isinstance(leak, dict) or not isinstance(leak.get("findings"), int):
            reasons.append("the version was not checked for training-data leaks (the policy limits leak findings)")
        elif leak["findings"] > policy.max_leak_findings:
            reasons.append(f"{leak['findings']} leak findings exceed the policy's maximum {policy.max_leak_findings}")
    return reasons
