"""OpenAI's chat completion bodies as this service accepts and answers them (``/openai/v1``).

Every request parameter is honoured or refused with 400 naming it (:meth:`ChatCompletionRequest.refusal`;
docs/serving.md has the table). Kept apart from :mod:`.schemas` (the service's own V1/V2 bodies and
settings), which re-exports every name here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool

from .json_types import NonEmpty, json_int


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
