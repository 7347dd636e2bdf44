"""Typed request/response bodies and the deployment settings of the NER service.

Every body the service accepts or returns is a pydantic model, and every one is published in the
server's OpenAPI document (``/openapi.json``), so clients and fuzzers (schemathesis) see the real
schema of the predict routes, not kserve's untyped ``Request``.

The request limits (text length, labels, instances) are deployment settings, and they are part of
the published schema: :func:`request_models` builds the request classes for one
:class:`ServeSettings`. The module-level classes (``V1Request`` ...) use the defaults and are what
clients import for typing.

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

import json
import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
)

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


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` admits 3.0; pydantic's strict int does not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer as JSON Schema defines it: ints and integral floats, never strings or booleans.
JSONInt = Annotated[int, BeforeValidator(_integral)]


def json_int(**constraints: Any) -> Any:
    """:data:`JSONInt` with bounds (the bounds must come before the validator to reach the JSON schema)."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integral)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _bad_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class RequestModels:
    """The request classes for one set of limits (see :func:`request_models`)."""

    def __init__(self, settings: ServeSettings):
        s = settings
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

        class V1Request(BaseModel):
            """KServe V1 predict body."""

            model_config = ConfigDict(extra="forbid", strict=True, title="V1PredictRequest")
            instances: list[NERInstance] = Field(min_length=1, max_length=s.max_instances,
                                                 description=f"1-{s.max_instances} sentences.")

        Scalar = str | StrictBool | StrictInt | float
        n_max = max(s.max_instances, 1)
        Shape = Annotated[list[JSONInt], Field(min_length=1, max_length=1, description="[N]: one value per sentence (or [1]).")]

        class _Tensor(BaseModel):
            model_config = ConfigDict(extra="forbid", strict=True)
            shape: Shape
            parameters: dict[str, Scalar] | None = None

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

        V2InputTensor = Annotated[TextTensor | LabelsTensor | ReturnReasoningTensor | MaxReasoningTensor, Discriminator("name")]

        class V2RequestedOutput(BaseModel):
            model_config = ConfigDict(extra="forbid", title="V2RequestedOutput")
            name: str
            parameters: dict[str, Scalar] | None = None

        class V2InferRequest(BaseModel):
            """Open Inference Protocol infer body; see the module docstring for the tensor layout."""

            model_config = ConfigDict(extra="forbid", title="V2InferRequest", protected_namespaces=())
            id: str | None = Field(None, max_length=256)
            # Not in the OIP request object, but KServe's InferenceRESTClient sends them; the path wins
            # and a different value is refused (400).
            model_name: str | None = Field(None, max_length=256, description="Optional; must equal the path's model name.")
            model_version: str | None = Field(None, max_length=256, description="Optional; must equal the served version.")
            parameters: dict[str, Scalar] | None = None
            inputs: list[V2InputTensor] = Field(min_length=2, max_length=4)
            outputs: list[V2RequestedOutput] | None = None

        self.NERInstance = NERInstance
        self.V1Request = V1Request
        self.V2InputTensor = V2InputTensor
        self.V2InferRequest = V2InferRequest


def request_models(settings: ServeSettings) -> RequestModels:
    return RequestModels(settings)


_DEFAULT = RequestModels(ServeSettings())
NERInstance = _DEFAULT.NERInstance
V1Request = _DEFAULT.V1Request
V2InferRequest = _DEFAULT.V2InferRequest


# ------------------------------------------------------------------------------------ OpenAI


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str = Field(max_length=200_000)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="The JSON Schema the answer must match.")
    strict: StrictBool | None = Field(None, description="Always enforced in process (the grammar is the schema).")


class _Format(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextFormat(_Format):
    type: Literal["text"]


class JSONObjectFormat(_Format):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(_Format):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


#: OpenAI's response_format, tagged by ``type`` (so the published schema states that json_schema needs one).
ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaResponseFormat, Discriminator("type")]


#: Parameters refused with 400 on every backend: the model has no tools, audio or web search.
REFUSED_EVERYWHERE = {
    "tools": "tool calling is not supported (the model is not trained for it)",
    "tool_choice": "tool calling is not supported (the model is not trained for it)",
    "functions": "function calling is not supported (the model is not trained for it)",
    "function_call": "function calling is not supported (the model is not trained for it)",
    "audio": "audio output is not supported", "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
#: Refused in process (the remote server gets them verbatim).
REFUSED_IN_PROCESS = {
    "reasoning_effort": "not supported in process; set the thinking budget with thinking_token_budget",
    "verbosity": "not supported in process",
    "presence_penalty": "penalties are not supported in process (only 0)",
    "frequency_penalty": "penalties are not supported in process (only 0)",
    "logit_bias": "logit_bias is not supported in process",
}

#: Values of those parameters that change nothing, so they are accepted.
NEUTRAL: dict[str, tuple[Any, ...]] = {"tools": ([],), "functions": ([],), "tool_choice": ("none",), "presence_penalty": (0,),
                                       "frequency_penalty": (0,), "logit_bias": ({},)}


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion body: every parameter is honoured or refused with 400 naming it
    (:meth:`refusal`; docs/serving.md has the table); fields that change nothing here (user, metadata,
    store, service_tier ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: json_int(ge=1) | None = Field(None, description="Capped at the deployment's max_new_tokens.")
    max_completion_tokens: json_int(ge=1) | None = Field(None, description="Wins over max_tokens; capped the same way.")
    temperature: Annotated[float, Field(ge=0, le=2)] | None = Field(None, description="Default 0 (greedy).")
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: json_int(ge=1, le=16) = Field(1, description="Choices (1-16); in process each is a row of the batch.")
    seed: json_int(ge=-(2**63), le=2**63 - 1) | None = Field(
        None, description="Seeded sampling: the same request and seed give the same answer (choice i uses seed + i).")
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=4)] | None = Field(
        None, description="Up to 4 stop strings, matched on the text and not returned.")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: StrictBool | None = Field(None, description="Log-probabilities of the chosen tokens (not with stream in process).")
    top_logprobs: json_int(ge=0, le=20) | None = Field(None, description="0-20 most likely tokens per position; needs logprobs.")
    response_format: ResponseFormat | None = Field(
        None, description="json_object / json_schema: the answer after the reasoning block is grammar-constrained.")
    thinking_token_budget: json_int(ge=0, le=1_000_000) | None = Field(
        None, description="Thinking tokens before </think> is forced (vLLM's name; header X-Thinking-Token-Budget too).")
    # Refused (REFUSED_EVERYWHERE / REFUSED_IN_PROCESS) unless absent or neutral.
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    modalities: list[str] | None = None
    reasoning_effort: Any = None
    verbosity: Any = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Any] | None = None

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def refusal(self, in_process: bool, structured_output: bool = True) -> tuple[str, str] | None:
        """(parameter, why) for the first parameter this backend cannot honour; None when all can be."""
        def given(name: str) -> bool:
            value = getattr(self, name)  # neutral values (no tools, "none" tool choice, 0 penalty, no bias) change nothing
            return value is not None and value not in NEUTRAL.get(name, ())

        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        if self.modalities is not None and set(self.modalities) - {"text"}:
            return "modalities", "only text output is supported"
        for name, why in REFUSED_EVERYWHERE.items():
            if given(name):
                return name, why
        if in_process:
            for name, why in REFUSED_IN_PROCESS.items():
                if given(name):
                    return name, why
            if self.logprobs and self.stream:
                return "logprobs", "logprobs are returned without stream only (in process)"
        elif not structured_output and self.response_format is not None and self.response_format.type != "text":
            return "response_format", "the remote backend is configured without structured output (remote_structured_output: none)"
        return None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer after the reasoning block; null when only reasoning came.")
    reasoning_content: str | None = Field(None, description="The thinking text (vLLM's reasoning-parser field).")


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChoiceLogprobs | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = Field(0, description="Tokens of the reasoning block, up to and including </think>.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "reasoning-ner"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


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


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
