"""What every generation backend offers the service: :class:`GenRequest` in, :class:`GenResult` out.

:meth:`Backend.generate` completes a raw ChatML prompt, :meth:`Backend.stream` does the same as text
deltas and then the result, :meth:`Backend.generate_chat` answers a chat turn (where the remote backend
can constrain the answer). The predict, OpenAI and V2 routes only speak this interface, so the
in-process model (:mod:`.transformers_backend`) and a remote vLLM (:mod:`.remote_backend`) are
interchangeable behind them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..prompt import IM_END, chatml

@dataclass
class GenRequest:
    prompt: str  # raw ChatML text; generation continues right after it
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text and excluded from it (OpenAI's `stop`)
    json_schema: dict[str, Any] | None = None  # constrain the whole completion (remote only)
    # In process only (serving/constrained.py): a grammar for the answer after </think>, a thinking budget
    # (</think> forced after that many tokens), the answer's reserve, seeded sampling, logprobs (top-k).
    grammar: str | None = None
    think_budget: int | None = None
    answer_reserve: int = 0
    seed: int | None = None
    logprobs: int | None = None


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it; None = end of turn or length
    reasoning: str | None = None  # thinking text returned separately (vLLM reasoning parser)
    reasoning_tokens: int | None = None  # tokens up to and including </think>, where known
    logprobs: list[dict[str, Any]] | None = None  # OpenAI's logprobs.content, when asked (in process)


class Backend:
    """The interface. ``load`` is synchronous (model load time); the rest are coroutines."""

    kind = "base"
    supports_structured_output = False
    proxies_openai = False  # True: the OpenAI routes are forwarded verbatim (remote backend)

    def load(self) -> None:  # pragma: no cover - trivial
        pass

    async def ready(self) -> bool:
        return True

    async def generate(self, req: GenRequest) -> GenResult:
        raise NotImplementedError

    async def stream(self, req: GenRequest) -> AsyncIterator[str | GenResult]:
        """Text deltas, then one final :class:`GenResult`. Default: one delta from generate()."""
        result = await self.generate(req)
        if result.text:
            yield result.text
        yield result

    async def generate_chat(self, messages: list[dict[str, str]], max_new_tokens: int,
                            json_schema: dict[str, Any] | None = None, temperature: float = 0.0) -> GenResult:
        """One assistant turn for ``messages``. Default: ChatML of the messages through generate()."""
        return await self.generate(GenRequest(render_chatml(messages), max_new_tokens, temperature))

    async def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


def render_chatml(messages: Sequence[dict[str, str]]) -> str:
    """Qwen ChatML of the messages plus the generation prompt (the project's template, no default system
    prompt); one user message gives exactly :func:`reasoning_ner.prompt.chatml`."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return chatml(messages[0]["content"])
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + "<|im_start|>assistant\n"

