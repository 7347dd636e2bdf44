"""Typed request/response bodies and the deployment settings of the NER service.

Every body the service accepts or returns is a pydantic model, and every one is published in the
server's OpenAPI document (``/openapi.json``), so clients and fuzzers (schemathesis) see the real
schema of the predict routes, not kserve's untyped ``Request``.

The request limits (text length, labels, instances) are deployment settings, and they are part of
the published schema: :func:`request_models` builds the request classes for one
:class:`ServeSettings`. The module-level classes (``V1Request`` ...) use the defaults and are what
clients import for typing.

OpenAI's chat completion bodies are defined in :mod:`.openai_schemas` and importable from here.

Tensor layout of the V2 (Open Inference Protocol) ``infer`` route, N = number of sentences:

======================  ========  =========  ====================================================
tensor                  datatype  shape      data
======================  ========  =========  ====================================================
in  ``text``            BYTES     [N]        the sentences (UTF-8 strings)
in  ``labels``          BYTES     [N] or [1] one JSON array of label strings per sentence, or one
                                             array for all sentences
in  ``return_reasoning`` BOOL     [N] or [1] optional, default false
in  ``max_reasoning_tokens`` INT64 [N] or [1] optional; a negative value means "no request cap"
out ``entities``        BYTES     [N]        JSON array of ``{"text","label","start","end"}``
out ``ungrounded``      BYTES     [N]        JSON array of ``{"text","label"}``
out ``parse_error``     BYTES     [N]        "" when the answer parsed, else the reason
out ``reasoning``       BYTES     [N]        only when some sentence asked for it ("" for others)
======================  ========  =========  ====================================================
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
)

from .json_types import JSONInt, NonEmpty, json_int
from .openai_schemas import (
    NEUTRAL,
    REFUSED_EVERYWHERE,
    REFUSED_IN_PROCESS,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    CompletionTokensDetails,
    JSONObjectFormat,
    JSONSchemaFormat,
    JSONSchemaResponseFormat,
    ModelCard,
    ModelList,
    ResponseFormat,
    StreamOptions,
    TextFormat,
    TextPart,
    TokenLogprob,
    TopLogprob,
    Usage,
)

# Every body is importable from here, OpenAI's (defined in .openai_schemas) included.
__all__ = [
    "ServeSettings", "settings_from_config",
    "ErrorBody", "ErrorResponse", "V2ErrorResponse",
    "EntityOut", "UngroundedOut", "Prediction", "V1Response", "V2OutputTensor", "V2InferResponse",
    "JSONInt", "json_int", "NonEmpty", "RequestModels", "request_models", "NERInstance", "V1Request", "V2InferRequest",
    "TextPart", "ChatMessage", "StreamOptions", "JSONSchemaFormat", "TextFormat", "JSONObjectFormat",
    "JSONSchemaResponseFormat", "ResponseFormat", "REFUSED_EVERYWHERE", "REFUSED_IN_PROCESS", "NEUTRAL",
    "ChatCompletionRequest", "AssistantMessage", "TopLogprob", "TokenLogprob", "ChoiceLogprobs", "ChatChoice",
    "CompletionTokensDetails", "Usage", "ChatCompletion", "ModelCard", "ModelList",
    "answer_json_schema", "label_pattern", "validation_problems",
]

# ------------------------------------------------------------------------------------ settings


class ServeSettings(BaseModel):
    """The ``serve`` configuration section (defaults here; env ``RNER_SERVE_<FIELD>`` overrides)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model_name: str = Field("reasoning-ner", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                            description="Name on the routes: /v1/models/<name>:predict, OpenAI `model`.")
    host: str = Field("127.0.0.1", description="Bind address (loopback unless told otherwise).")
    port: int = Field(8080, ge=0, le=65535)
    backend: Literal["transformers", "remote"] = Field(
        "transformers", description="transformers: in-process with dynamic batching; remote: an OpenAI-compatible server (vLLM).")
    remote_url: str | None = Field(None, description="Base URL of the remote OpenAI-compatible API, e.g. http://ner-llm-predictor/openai/v1.")
    remote_model: str | None = Field(None, description="Model name sent to the remote server (default: the served model name).")
    remote_api_key_env: str = Field("RNER_REMOTE_API_KEY", description="Environment variable holding the remote API key.")
    remote_structured_output: Literal["response_format", "structured_outputs", "guided_json", "none"] = Field(
        "response_format", description="How the answer's JSON schema is sent to vLLM (none = validate and repair only).")
    remote_max_concurrency: int = Field(256, ge=1, description="Open requests to the remote server at once.")
    max_text_chars: int = Field(4000, ge=1, description="Longest sentence accepted (characters).")
    max_labels: int = Field(64, ge=1, description="Most labels per sentence.")
    max_label_chars: int = Field(100, ge=1, description="Longest label (characters).")
    max_instances: int = Field(32, ge=1, description="Most sentences per request.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    request_timeout_s: float = Field(60.0, gt=0, description="A request still unanswered after this gets 504.")
    max_batch_size: int = Field(32, ge=1, description="Dynamic batching: most sequences per generate call.")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="Dynamic batching: how long the first request waits for company.")
    max_queue: int = Field(1024, ge=1, description="Sequences waiting for the model before new requests get 503.")
    max_new_tokens: int = Field(4096, ge=1, description="Tokens generated per sentence (reasoning + answer).")
    max_answer_tokens: int = Field(512, ge=1, description="Tokens for the answer after a forced </think> (at most max_new_tokens).")
    max_reasoning_tokens: int | None = Field(None, ge=0, description="Deployment cap on thinking tokens (None = uncapped).")
    prompt_style: Literal["paper", "compact"] = Field("paper", description="Prompt layout the model was trained with.")
    device: str | None = Field(None, description="torch device for the in-process backend (default: cuda if present, else cpu).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = torch's default); on a "
                                      "shared or CPU-limited host set it to the cores really available.")
    access_log: bool = Field(True, description="uvicorn access log line per request.")
    model_version: str | None = Field(None, description="The served model's version (V2 model_version/versions); default: "
                                      "the registry version of the model folder, else a digest of its model card and config "
                                      "(in process), else none (remote).")
    # Readiness of the remote backend (docs/serving.md "Probes"): not ready after probe_failures probes in a
    # row failed, ready again after probe_successes in a row passed, one probe every probe_interval_s.
    probe_upstream: bool = Field(True, description="Remote backend: readiness follows GET {remote_url}/models. False when "
                                 "the predictor scales to zero (probing would keep it awake): readiness is then this server's.")
    probe_interval_s: float = Field(2.0, gt=0, description="Seconds between upstream probes (each also times out after this).")
    probe_failures: int = Field(3, ge=1, description="Failed probes in a row before the server reports not ready (503).")
    probe_successes: int = Field(2, ge=1, description="Passed probes in a row before it reports ready again.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body not complete this long after the headers gets 408.")
    max_json_depth: int = Field(64, ge=2, description="Deepest JSON nesting accepted in a body (400 beyond it).")
    api_keys_file: str | None = Field(
        None, description="API-key authentication (serving/auth.py): a file of keys, one per line, or a directory of such "
        "files (a mounted Secret); every route but health and /metrics then needs 'Authorization: Bearer <key>'. "
        "Re-read when it changes. None = no authentication.")
    drift_max_labels: int = Field(100, ge=1, description="Drift metrics: most distinct label values with their own series "
                                  "(label sets are user input); later labels count under __other__.")
    drift_baseline: str | None = Field(None, description="Drift baseline (drift_baseline.json, a path or fsspec URI) exported "
                                       "as rner_drift_baseline_* gauges; None = <model folder>/drift_baseline.json (in process), "
                                       "none for the remote backend.")

    @classmethod
    def from_sources(cls, base: dict[str, Any] | None = None, env: dict[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """``base`` (the config section) <- ``RNER_SERVE_*`` env <- explicit overrides (None = unset)."""
        values: dict[str, Any] = dict(base or {})
        env = os.environ if env is None else env
        for name in cls.model_fields:
            raw = env.get(f"RNER_SERVE_{name.upper()}")
            if raw is not None:
                values[name] = yaml.safe_load(raw) if raw.strip() else None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def settings_from_config(cfg: Any, **overrides: Any) -> ServeSettings:
    """Settings from a resolved :class:`reasoning_ner.config.Config` (its ``serve`` section when it has
    one; the prompt style and eval token budget otherwise), env and explicit overrides."""
    base: dict[str, Any] = {}
    if cfg is not None:
        base["prompt_style"] = cfg.prompt.style
        base["max_new_tokens"] = cfg.eval.max_new_tokens
        serve = getattr(cfg, "serve", None)
        if serve is not None:
            section = serve.model_dump() if hasattr(serve, "model_dump") else dict(serve)
            # None in the section means "not set here" (every nullable setting defaults to None anyway).
            base.update({k: v for k, v in section.items() if k in ServeSettings.model_fields and v is not None})
    return ServeSettings.from_sources(base, **overrides)


# ------------------------------------------------------------------------------------ errors


class ErrorBody(BaseModel):
    message: str = Field(description="What is wrong, naming the field.")
    type: str = Field(description="invalid_request_error, not_found_error, overloaded_error, timeout_error, backend_error ...")
    param: str | None = Field(None, description="The offending field, e.g. instances[0].text (None when no field is at fault).")
    code: int = Field(description="The HTTP status.")


class ErrorResponse(BaseModel):
    """Every error of the service's own routes (OpenAI's error shape, so the openai client reads it)."""

    error: ErrorBody


class V2ErrorResponse(BaseModel):
    """Every error under /v2 (the Open Inference Protocol's error object); the message names the field."""

    error: str = Field(description="What is wrong, starting with the offending field, e.g. 'inputs[labels].data[0]: ...'.")


# ------------------------------------------------------------------------------------ predictions


class EntityOut(BaseModel):
    text: str = Field(description="The span as it appears in the input: text[start:end].")
    label: str
    start: int = Field(ge=0, description="Character offset, inclusive.")
    end: int = Field(ge=0, description="Character offset, exclusive.")


class UngroundedOut(BaseModel):
    text: str = Field(description="A span the model predicted that does not occur in the input.")
    label: str


class Prediction(BaseModel):
    entities: list[EntityOut] = Field(description="Grounded entities (verifiable offsets), sorted by position.")
    ungrounded: list[UngroundedOut] = Field(default_factory=list)
    reasoning: str | None = Field(None, description="The thinking text; present only when return_reasoning was true.")
    parse_error: str | None = Field(None, description="Why the model's answer could not be read (entities are then empty).")
    repairs: list[str] = Field(default_factory=list, description="What was repaired in the answer (labels dropped, JSON closed ...).")
    reasoning_capped: bool = Field(False, description="The reasoning budget ran out and </think> was forced.")
    reasoning_tokens: int | None = Field(None, description="Thinking tokens, where the backend reports them.")
    completion_tokens: int = Field(0, description="Tokens generated for this sentence.")


class V1Response(BaseModel):
    predictions: list[Prediction]


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[V2OutputTensor]


# ------------------------------------------------------------------------------------ requests
# The limits are deployment settings and part of the published schema, so the request classes are
# built per ServeSettings: one small builder per body, RequestModels puts them together.

#: A ``parameters`` value: the protocol allows strings, booleans and numbers.
_Scalar = str | StrictBool | StrictInt | float
_Shape = Annotated[list[JSONInt], Field(min_length=1, max_length=1, description="[N]: one value per sentence (or [1]).")]


def _bad_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _ner_instance_model(s: ServeSettings) -> type[BaseModel]:
    """One V1 instance under the deployment's text and label limits."""
    Label = Annotated[str, StringConstraints(min_length=1, max_length=s.max_label_chars, pattern=r"\S")]

    class NERInstance(BaseModel):
        """One sentence and the entity types to find in it."""

        model_config = ConfigDict(extra="forbid", strict=True, title="NERInstance")
        text: str = Field(min_length=1, max_length=s.max_text_chars, pattern=r"\S",
                          description=f"The sentence (1-{s.max_text_chars} characters, not only whitespace).")
        labels: list[Label] = Field(min_length=1, max_length=s.max_labels,
                                    description=f"Entity types, e.g. [\"person\", \"location\"] (1-{s.max_labels}).")
        return_reasoning: StrictBool = Field(False, description="Return the model's thinking text.")
        max_reasoning_tokens: json_int(ge=0, le=1_000_000) | None = Field(
            None,
            description="Thinking budget for this sentence; the deployment cap applies when smaller. 0 = answer at once.")

        @field_validator("text")
        @classmethod
        def _text_unicode(cls, v: str) -> str:
            if _bad_unicode(v):
                raise ValueError("text is not valid Unicode (lone surrogate)")
            return v

        @field_validator("labels")
        @classmethod
        def _labels_unicode(cls, v: list[str]) -> list[str]:
            for i, label in enumerate(v):
                if _bad_unicode(label):
                    raise ValueError(f"label {i} is not valid Unicode (lone surrogate)")
            return v

    return NERInstance


def _v1_request_model(s: ServeSettings, instance: type[BaseModel]) -> type[BaseModel]:
    """The V1 predict body: 1 to max_instances of ``instance``."""

    class V1Request(BaseModel):
        """KServe V1 predict body."""

        model_config = ConfigDict(extra="forbid", strict=True, title="V1PredictRequest")
        instances: list[instance] = Field(min_length=1, max_length=s.max_instances,  # type: ignore[valid-type]
                                          description=f"1-{s.max_instances} sentences.")

    return V1Request


def _v2_input_tensor(s: ServeSettings) -> Any:
    """The V2 input tensors (see the module docstring), one class each, told apart by ``name``."""
    n_max = max(s.max_instances, 1)

    class _Tensor(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        shape: _Shape
        parameters: dict[str, _Scalar] | None = None

    class TextTensor(_Tensor):
        model_config = ConfigDict(title="V2TextTensor")
        name: Literal["text"]
        datatype: Literal["BYTES"]
        data: list[str] = Field(min_length=1, max_length=n_max, description="The sentences.")

    class LabelsTensor(_Tensor):
        model_config = ConfigDict(title="V2LabelsTensor")
        name: Literal["labels"]
        datatype: Literal["BYTES"]
        data: list[str] = Field(min_length=1, max_length=n_max,
                                description='One JSON array of labels per sentence (or one for all), e.g. "[\\"person\\"]".')

    class ReturnReasoningTensor(_Tensor):
        model_config = ConfigDict(title="V2ReturnReasoningTensor")
        name: Literal["return_reasoning"]
        datatype: Literal["BOOL"]
        data: list[StrictBool] = Field(min_length=1, max_length=n_max)

    class MaxReasoningTensor(_Tensor):
        model_config = ConfigDict(title="V2MaxReasoningTokensTensor")
        name: Literal["max_reasoning_tokens"]
        datatype: Literal["INT64", "INT32"]
        data: list[JSONInt] = Field(min_length=1, max_length=n_max, description="Negative = no request cap.")

    return Annotated[TextTensor | LabelsTensor | ReturnReasoningTensor | MaxReasoningTensor, Discriminator("name")]


def _v2_infer_request_model(input_tensor: Any) -> type[BaseModel]:
    """The V2 infer body around ``input_tensor`` (:func:`_v2_input_tensor`)."""

    class V2RequestedOutput(BaseModel):
        model_config = ConfigDict(extra="forbid", title="V2RequestedOutput")
        name: str
        parameters: dict[str, _Scalar] | None = None

    class V2InferRequest(BaseModel):
        """Open Inference Protocol infer body; see the module docstring for the tensor layout."""

        model_config = ConfigDict(extra="forbid", title="V2InferRequest", protected_namespaces=())
        id: str | None = Field(None, max_length=256)
        # Not in the OIP request object, but KServe's InferenceRESTClient sends them; the path wins
        # and a different value is refused (400).
        model_name: str | None = Field(None, max_length=256, description="Optional; must equal the path's model name.")
        model_version: str | None = Field(None, max_length=256, description="Optional; must equal the served version.")
        parameters: dict[str, _Scalar] | None = None
        inputs: list[input_tensor] = Field(min_length=2, max_length=4)  # type: ignore[valid-type]
        outputs: list[V2RequestedOutput] | None = None

    return V2InferRequest


class RequestModels:
    """The request classes for one set of limits (see :func:`request_models`)."""

    def __init__(self, settings: ServeSettings):
        self.NERInstance = _ner_instance_model(settings)
        self.V1Request = _v1_request_model(settings, self.NERInstance)
        self.V2InputTensor = _v2_input_tensor(settings)
        self.V2InferRequest = _v2_infer_request_model(self.V2InputTensor)


def request_models(settings: ServeSettings) -> RequestModels:
    return RequestModels(settings)


_DEFAULT = RequestModels(ServeSettings())
NERInstance = _DEFAULT.NERInstance
V1Request = _DEFAULT.V1Request
V2InferRequest = _DEFAULT.V2InferRequest


# ------------------------------------------------------------------------------------ helpers


def answer_json_schema(labels: list[str]) -> dict[str, Any]:
    """JSON schema of the answer ``{"entities": {label: [span, ...]}}`` restricted to ``labels``.

    The labels are a ``patternProperties`` alternative, not ``properties``: grammar engines (llguidance,
    xgrammar) emit ``properties`` in the schema's order, while the model writes its labels in the order of
    their first mention (the training layout). Forcing the schema's order turned a correct
    ``{"person": [...], "location": [...]}`` into every span under ``person``."""
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "object",
                "patternProperties": {label_pattern(labels): {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": False,
            }
        },
        "required": ["entities"],
        "additionalProperties": False,
    }


#: Characters with a meaning in ECMA/Rust regular expressions (``re.escape`` also escapes spaces, which
#: Rust's regex refuses outside verbose mode).
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}/-")


def label_pattern(labels: list[str]) -> str:
    """An anchored regex matching exactly the given labels."""
    escaped = ("".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in label) for label in labels)
    return f"^({'|'.join(escaped)})$"


def validation_problems(exc: ValidationError | list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(param, message, type) per pydantic error, with params as ``instances[0].text``."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    out = []
    tensor_tags = {"text", "labels", "return_reasoning", "max_reasoning_tokens"}
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        # V2 tensors are a union tagged by name; pydantic puts the tag in the path: inputs.0.text.datatype.
        if len(loc) > 2 and loc[0] == "inputs" and isinstance(loc[1], int) and loc[2] in tensor_tags:
            del loc[2]
        param = ""
        for part in loc:
            if isinstance(part, int):
                param += f"[{part}]"
            else:
                param += ("." if param else "") + str(part)
        out.append((param or "body", err.get("msg", "invalid"), err.get("type", "invalid")))
    return out
