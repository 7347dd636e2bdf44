"""The NER service as a ``kserve.Model``: V1 ``predict`` (instances) and V2 ``infer`` (tensors).

Both protocols come down to :meth:`NERModel.extract`: each sentence is rendered with the
project's prompt (the style the model was trained with), generated through the backend (the
in-process backend batches concurrent sentences dynamically), within the reasoning budget, then
parsed, repaired and grounded (:mod:`.budget`). Sentences of one request run concurrently; the
whole request is bounded by ``request_timeout_s`` (504 when exceeded).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import kserve
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse
from pydantic import BaseModel, ValidationError

from ..prompt import render_prompt
from .backends import INSTANCES, Backend, BackendTimeout, InvalidRequest, ServingError, TransformersBackend
from .budget import build_prediction, effective_budget, generate_ner
from .drift import DriftRecorder, baseline_location, export_baseline
from .health import Readiness, warm_up
from .oip import resolve_version
from .schemas import Prediction, ServeSettings, request_models, validation_problems

V2_INPUTS = [
    {"name": "text", "datatype": "BYTES", "shape": [-1]},
    {"name": "labels", "datatype": "BYTES", "shape": [-1]},
    {"name": "return_reasoning", "datatype": "BOOL", "shape": [-1]},
    {"name": "max_reasoning_tokens", "datatype": "INT64", "shape": [-1]},
]
V2_OUTPUTS = [
    {"name": "entities", "datatype": "BYTES", "shape": [-1]},
    {"name": "ungrounded", "datatype": "BYTES", "shape": [-1]},
    {"name": "parse_error", "datatype": "BYTES", "shape": [-1]},
    {"name": "reasoning", "datatype": "BYTES", "shape": [-1]},
]


class NERModel(kserve.Model):
    """Reason, then extract named entities; see the module docstring."""

    def __init__(self, name: str, backend: Backend, settings: ServeSettings):
        super().__init__(name)
        self.backend = backend
        self.settings = settings
        self.models = request_models(settings)
        self.created = time.time()
        self.version = resolve_version(settings, getattr(backend, "model_dir", None))
        self.readiness = Readiness(backend, settings)
        self.drift = DriftRecorder(settings.drift_max_labels)

    def load(self) -> bool:
        self.backend.load()
        if isinstance(self.backend, TransformersBackend):
            warm_up(self.backend)  # ready means one generation went through (health.py)
        export_baseline(baseline_location(self.settings.drift_baseline, getattr(self.backend, "model_dir", None)),
                        self.drift.cap, self.version)
        self.readiness.mark_loaded()
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        # kserve's contract: "loaded" (its dataplane calls load() on a request to an unhealthy model).
        return self.ready

    async def serving_ready(self) -> bool:
        """What every ready route answers: loaded, warmed up and (remote) the upstream answering its probes.
        The cached state of health.Readiness: a readiness probe never waits on the upstream."""
        return self.ready and self.readiness.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return V2_INPUTS

    def get_output_types(self) -> list[dict[str, Any]]:
        return V2_OUTPUTS

    # -- the work -----------------------------------------------------------------------------

    async def extract_one(self, text: str, labels: list[str], return_reasoning: bool = False,
                          max_reasoning_tokens: int | None = None) -> Prediction:
        s = self.settings
        prompt = render_prompt(text, labels, s.prompt_style)
        gen = await generate_ner(
            self.backend, prompt, labels,
            max_new_tokens=s.max_new_tokens, max_answer_tokens=min(s.max_answer_tokens, s.max_new_tokens),
            budget=effective_budget(max_reasoning_tokens, s.max_reasoning_tokens),
        )
        prediction = build_prediction(text, labels, gen, return_reasoning)
        self.drift.record(labels, prediction, len(prompt))
        return prediction

    async def extract(self, instances: list[Any], protocol: str) -> list[Prediction]:
        """All sentences of one request, concurrently, within the request timeout."""
        async def one(i: int, inst: Any) -> Prediction:
            try:
                return await self.extract_one(inst.text, list(inst.labels), inst.return_reasoning, inst.max_reasoning_tokens)
            except ServingError as exc:
                if exc.param == "text":  # name the sentence
                    exc.param = f"instances[{i}].text" if protocol == "v1" else f"inputs[text].data[{i}]"
                raise

        tasks = [asyncio.ensure_future(one(i, inst)) for i, inst in enumerate(instances)]
        try:
            results = await asyncio.wait_for(asyncio.gather(*tasks), self.settings.request_timeout_s)
        except TimeoutError as exc:
            raise BackendTimeout(f"the request took longer than request_timeout_s={self.settings.request_timeout_s:g} s") from exc
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
        INSTANCES.labels(protocol).inc(len(instances))
        return list(results)

    # -- kserve entry points --------------------------------------------------------------------

    def validate(self, payload: Any) -> Any:
        if isinstance(payload, BaseModel):  # already validated by our typed route
            return payload
        return super().validate(payload)

    async def predict(self, payload: dict | BaseModel | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        if isinstance(payload, self.models.V1Request):
            request = payload
        elif not isinstance(payload, dict):
            raise InvalidRequest("the body must be a JSON object with an 'instances' list", param="body")
        else:  # a V1 body that did not come through our typed route (kserve's gRPC/REST plumbing)
            try:
                request = self.models.V1Request.model_validate(payload)
            except ValidationError as exc:
                problems = validation_problems(exc)
                raise InvalidRequest("; ".join(f"{p}: {m}" for p, m, _ in problems), param=problems[0][0]) from exc
        predictions = await self.extract(request.instances, "v1")
        return {"predictions": [self.render(p, inst.return_reasoning) for p, inst in zip(predictions, request.instances)]}

    @staticmethod
    def render(prediction: Prediction, return_reasoning: bool) -> dict[str, Any]:
        body = prediction.model_dump()
        if not return_reasoning:
            body.pop("reasoning", None)
        return body

    # -- V2 -------------------------------------------------------------------------------------

    def _v2_instances(self, request: InferRequest) -> list[Any]:
        """Tensors -> validated instances (layout in :mod:`.schemas`); errors name the tensor."""
        tensors: dict[str, InferInput] = {}
        for t in request.inputs:
            if t.name in tensors:
                raise InvalidRequest(f"input tensor {t.name!r} appears twice", param=f"inputs[{t.name}]")
            tensors[t.name] = t
        known = {spec["name"] for spec in V2_INPUTS}
        for name in tensors:
            if name not in known:
                raise InvalidRequest(f"unknown input tensor {name!r}; expected {sorted(known)}", param=f"inputs[{name}]")
        for required in ("text", "labels"):
            if required not in tensors:
                raise InvalidRequest(f"input tensor {required!r} is missing", param=f"inputs[{required}]")
        expected_types = {"text": {"BYTES"}, "labels": {"BYTES"}, "return_reasoning": {"BOOL"}, "max_reasoning_tokens": {"INT64", "INT32"}}
        for name, t in tensors.items():
            if t.datatype not in expected_types[name]:
                raise InvalidRequest(f"input tensor {name!r} must have datatype {'/'.join(sorted(expected_types[name]))}, "
                                     f"not {t.datatype}", param=f"inputs[{name}].datatype")
            data = t.data if isinstance(t.data, list) else list(t.data)
            if list(t.shape) != [len(data)]:
                raise InvalidRequest(f"input tensor {name!r} has shape {list(t.shape)} but {len(data)} values; "
                                     f"use shape [{len(data)}]", param=f"inputs[{name}].shape")
        texts = list(tensors["text"].data)
        n = len(texts)

        def column(name: str, default: Any) -> list[Any]:
            if name not in tensors:
                return [default] * n
            values = list(tensors[name].data)
            if len(values) == 1:
                return values * n
            if len(values) != n:
                raise InvalidRequest(f"input tensor {name!r} has {len(values)} values; give 1 or {n} (one per text)",
                                     param=f"inputs[{name}].data")
            return values

        raw_labels = column("labels", None)
        instances = []
        for i in range(n):
            labels = raw_labels[i]
            if isinstance(labels, str):
                try:
                    labels = json.loads(labels)
                except json.JSONDecodeError as exc:
                    raise InvalidRequest(f"labels[{i}] is not a JSON array of strings: {exc.msg}",
                                         param=f"inputs[labels].data[{i}]") from exc
            limit = column("max_reasoning_tokens", None)[i]
            if isinstance(limit, int) and not isinstance(limit, bool) and limit < 0:
                limit = None
            instances.append({"text": texts[i], "labels": labels, "return_reasoning": column("return_reasoning", False)[i],
                              "max_reasoning_tokens": limit})
        try:
            return self.models.V1Request.model_validate({"instances": instances}).instances
        except ValidationError as exc:
            problems = validation_problems(exc)
            names = {"text": "text", "labels": "labels", "return_reasoning": "return_reasoning",
                     "max_reasoning_tokens": "max_reasoning_tokens"}

            def v2_param(param: str) -> str:
                # instances[3].labels[0] -> inputs[labels].data[3]
                if param.startswith("instances["):
                    idx, _, rest = param[len("instances["):].partition("]")
                    field = rest.lstrip(".").split("[")[0].split(".")[0]
                    if field in names:
                        return f"inputs[{field}].data[{idx}]"
                return "inputs"

            raise InvalidRequest("; ".join(f"{v2_param(p)}: {m}" for p, m, _ in problems), param=v2_param(problems[0][0])) from exc

    def _requested_outputs(self, request: InferRequest) -> list[str] | None:
        """The request's ``outputs`` filter (None = all); unknown or repeated names are a 400 naming them."""
        if not request.request_outputs:
            return None
        known, names = [spec["name"] for spec in V2_OUTPUTS], []
        for i, out in enumerate(request.request_outputs):
            if out.name not in known:
                raise InvalidRequest(f"outputs[{i}].name: unknown output {out.name!r}; this model produces {known}",
                                     param=f"outputs[{i}].name")
            if out.name in names:
                raise InvalidRequest(f"outputs[{i}].name: output {out.name!r} requested twice", param=f"outputs[{i}].name")
            names.append(out.name)
        return names

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        requested = self._requested_outputs(request)
        instances = self._v2_instances(request)
        if requested is not None and "reasoning" in requested:  # asking for the tensor asks for its content
            instances = [inst.model_copy(update={"return_reasoning": True}) for inst in instances]
        predictions = await self.extract(instances, "v2")
        want_reasoning = any(inst.return_reasoning for inst in instances)

        def out(name: str, values: list[str]) -> InferOutput:
            return InferOutput(name=name, shape=[len(values)], datatype="BYTES", data=values)

        outputs = [
            out("entities", [json.dumps([e.model_dump() for e in p.entities], ensure_ascii=False) for p in predictions]),
            out("ungrounded", [json.dumps([u.model_dump() for u in p.ungrounded], ensure_ascii=False) for p in predictions]),
            out("parse_error", [p.parse_error or "" for p in predictions]),
        ]
        if want_reasoning:
            outputs.append(out("reasoning", [(p.reasoning or "") if inst.return_reasoning else ""
                                             for p, inst in zip(predictions, instances)]))
        if requested is not None:  # the filter, in the order asked
            by_name = {o.name: o for o in outputs}
            outputs = [by_name[name] for name in requested]
        return InferResponse(model_name=self.name, model_version=self.version, infer_outputs=outputs,
                             response_id=request.id or uuid.uuid4().hex)
