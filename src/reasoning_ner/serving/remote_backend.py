"""An OpenAI-compatible server as the backend (:class:`RemoteBackend`): vLLM inside KServe's Hugging
Face runtime on GPU clusters, over aiohttp.

Chat requests may come back with the reasoning split off by vLLM's reasoning parser
(``reasoning_content``, or ``reasoning`` on newer vLLM); raw-prompt continuation uses
``/completions``; JSON-schema constrained answers use ``response_format`` (or vLLM's
``structured_outputs`` / older ``guided_json``). Every failure of the upstream becomes one of the
service's errors in one place (:meth:`RemoteBackend._upstream_post`): 429 -> 503 overloaded, another
4xx/5xx or no connection -> 503, no answer in time -> 504, an answer that is not a JSON object -> 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

from ..prompt import IM_END
from .backend_interface import Backend, GenRequest, GenResult
from .errors import BackendTimeout, BackendUnavailable, BadGateway, Overloaded, ServingError
from .prometheus import BACKEND_ERRORS, TOKENS


class RemoteBackend(Backend):
    """An OpenAI-compatible server (vLLM) over aiohttp; see the module docstring."""

    kind = "remote"
    supports_structured_output = True
    proxies_openai = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 max_concurrency: int = 256, structured_output: str = "response_format"):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.structured_output = structured_output
        self.supports_structured_output = structured_output != "none"
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.base_url, "model": self.model, "structured_output": self.structured_output}

    def _session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)  # aiohttp sessions belong to one event loop
        if session is None or session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=headers,
            )
            self._sessions[loop] = session
        return session

    def structured_params(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        if schema is None or self.structured_output == "none":
            return {}
        if self.structured_output == "response_format":
            return {"response_format": {"type": "json_schema", "json_schema": {"name": "ner_answer", "schema": schema, "strict": True}}}
        if self.structured_output == "structured_outputs":
            return {"structured_outputs": {"json": schema}}
        return {"guided_json": schema}

    @contextlib.asynccontextmanager
    async def _upstream_post(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """POST ``body`` to the upstream and yield its successful response; the upstream's failures, here
        or while the caller reads the response, come out as the service's errors (counted by kind)."""
        import aiohttp

        try:
            async with self._session().post(f"{self.base_url}{path}", json=body) as resp:
                if resp.status >= 400:
                    raise self._status_error(resp.status, await resp.text())
                yield resp
        except (asyncio.TimeoutError, TimeoutError) as exc:
            BACKEND_ERRORS.labels(self.kind, "timeout").inc()
            raise BackendTimeout(f"remote backend did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            BACKEND_ERRORS.labels(self.kind, "connection").inc()
            raise BackendUnavailable(f"remote backend unreachable: {type(exc).__name__}: {exc}") from exc

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's answer to ``body``, which must be a JSON object (else 502)."""
        async with self._upstream_post(path, body) as resp:
            text = await resp.text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._bad_answer(path, f"invalid JSON ({exc.msg}): {text[:80]!r}") from exc
        if not isinstance(data, dict):
            raise self._bad_answer(path, f"a JSON {type(data).__name__}, not an object")
        return data

    def _bad_answer(self, path: str, what: str) -> BadGateway:
        BACKEND_ERRORS.labels(self.kind, "bad_body").inc()
        return BadGateway(f"upstream {self.base_url}{path} answered with {what}")

    def _status_error(self, status: int, text: str) -> ServingError:
        BACKEND_ERRORS.labels(self.kind, f"http_{status}").inc()
        detail = text[:300].replace("\n", " ")
        if status == 429:
            return Overloaded(f"remote backend is rate limiting (429): {detail}")
        return BackendUnavailable(f"remote backend answered {status}: {detail}")

    @staticmethod
    def _count_usage(body: dict[str, Any]) -> tuple[int, int, int | None]:
        """(prompt, completion, reasoning) tokens of an answer; the first two go to the tokens metric."""
        usage = body.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        reasoning_tokens = details.get("reasoning_tokens")
        TOKENS.labels("prompt").inc(prompt_tokens)
        TOKENS.labels("completion").inc(completion_tokens)
        return prompt_tokens, completion_tokens, reasoning_tokens

    @staticmethod
    def _finish_reason(choice: dict[str, Any]) -> str:
        """:class:`GenResult` knows "length" and "stop" only; any other reason the upstream gives ended the answer too."""
        return "length" if choice.get("finish_reason") == "length" else "stop"

    async def generate(self, req: GenRequest) -> GenResult:
        """``/completions`` with the raw prompt (continuations after a forced ``</think>``)."""
        body: dict[str, Any] = {
            "model": self.model, "prompt": req.prompt, "max_tokens": req.max_new_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "stop": [IM_END, *req.stop],
            **self.structured_params(req.json_schema),
        }
        if req.stop:
            body["include_stop_str_in_output"] = True  # vLLM: tells a stop string apart from end of turn
        data = await self._post("/completions", body)
        try:
            choice = data["choices"][0]
            text = choice.get("text") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise self._bad_answer("/completions", "no choices[0].text") from exc
        stop_reason = None
        for s in req.stop:
            if text.endswith(s):
                text, stop_reason = text[: -len(s)], s
                break
        else:
            if isinstance(choice.get("stop_reason"), str) and choice["stop_reason"] in req.stop:
                stop_reason = choice["stop_reason"]
        prompt_tokens, completion_tokens, reasoning_tokens = self._count_usage(data)
        return GenResult(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         finish_reason=self._finish_reason(choice), stop_reason=stop_reason, reasoning_tokens=reasoning_tokens)

    async def generate_chat(self, messages: list[dict[str, str]], max_new_tokens: int,
                            json_schema: dict[str, Any] | None = None, temperature: float = 0.0) -> GenResult:
        """``/chat/completions``; with vLLM's reasoning parser the schema constrains only the content after
        ``</think>`` and the thinking comes back as ``reasoning_content`` (``reasoning`` on newer vLLM)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature,
                **self.structured_params(json_schema)}
        data = await self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise self._bad_answer("/chat/completions", "no choices[0].message") from exc
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        prompt_tokens, completion_tokens, reasoning_tokens = self._count_usage(data)
        return GenResult(text=message.get("content") or "", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         finish_reason=self._finish_reason(choice),
                         reasoning=reasoning if isinstance(reasoning, str) else None, reasoning_tokens=reasoning_tokens)

    # -- OpenAI pass-through --------------------------------------------------------------------

    async def proxy_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(path, body)

    async def proxy_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The remote SSE stream, one parsed JSON chunk at a time (``[DONE]`` ends it)."""
        async with self._upstream_post(path, body) as resp:
            buffer = b""
            async for data in resp.content.iter_any():
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        return
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        BACKEND_ERRORS.labels(self.kind, "bad_json").inc()
                        continue
                    if not isinstance(chunk, dict):
                        raise self._bad_answer(path, f"a stream chunk that is a JSON {type(chunk).__name__}")
                    yield chunk

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """One cheap probe: GET {base_url}/models answered 2xx (vLLM and KServe's runtime answer it)."""
        try:
            async with self._session().get(f"{self.base_url}/models", timeout=_short_timeout(timeout_s)) as resp:
                return 200 <= resp.status < 300
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False

    async def close(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()


def _short_timeout(total: float = 2.0):
    import aiohttp

    return aiohttp.ClientTimeout(total=total)
