"""KServe's inference logger, read: CloudEvents in, canonical NER records out.

KServe's logger (the ``logger`` of an InferenceService component, run by its agent sidecar) POSTs
every request and every response as its own CloudEvent in binary mode: the body is the payload as
the component saw it, the attributes are headers — ``ce-specversion``, ``ce-id`` (shared by a request
and its response), ``ce-type`` (``org.kubeflow.serving.inference.request`` or ``...response``),
``ce-source``, ``ce-time``, and KServe's extensions ``ce-inferenceservicename``, ``ce-namespace``,
``ce-component``, ``ce-endpoint``. The logger sits on our transformer, the only component that sees
sentences, label sets and grounded entities (the predictor sees rendered prompts).

:func:`parse_event` turns one POST into a :class:`LoggedEvent` or a :class:`Skip` with a reason;
:func:`records_from_pair` turns a joined request/response into one record per sentence: the sentence,
its label set, the served model's entities and version, the time. V1 bodies
(``{"instances": [{"text", "labels"}]}`` / ``{"predictions": [...]}``) and V2 bodies (the ``text``
and ``labels`` input tensors, the ``entities`` output) are read; anything else is skipped, counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
#: Bodies larger than this are skipped (a sentence batch is a few kB; KServe does not cap what it logs).
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Skip:
    """Why a POST or a payload was not turned into records (counted per reason, never raised)."""

    reason: str
    detail: str = ""


@dataclass
class LoggedEvent:
    id: str
    kind: str  # "request" | "response"
    body: Any
    service: str
    namespace: str
    component: str
    endpoint: str
    time: str
    attributes: dict[str, str] = field(default_factory=dict)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def parse_event(headers: Mapping[str, str], body: bytes) -> LoggedEvent | Skip:
    """One CloudEvent POST (binary mode) as KServe's agent sends it."""
    if _header(headers, "ce-specversion") not in ("1.0", "0.3"):
        return Skip("not_a_cloudevent", "no ce-specversion 1.0 header")
    kind = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}.get(_header(headers, "ce-type"))
    if kind is None:
        return Skip("foreign_event_type", _header(headers, "ce-type")[:200])
    event_id = _header(headers, "ce-id")
    if not event_id:
        return Skip("no_event_id")
    if len(body) > MAX_BODY_BYTES:
        return Skip("body_too_large", f"{len(body)} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Skip("not_utf8", str(exc)[:200])
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        return Skip("not_json", exc.msg)
    return LoggedEvent(
        id=event_id, kind=kind, body=payload,
        service=_header(headers, "ce-inferenceservicename"), namespace=_header(headers, "ce-namespace"),
        component=_header(headers, "ce-component"), endpoint=_header(headers, "ce-endpoint"),
        time=_header(headers, "ce-time"),
        attributes={k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")},
    )


def _v2_inputs(body: dict[str, Any]) -> list[tuple[str, list[str]]] | None:
    """Our V2 request (serving/schemas.py): ``text`` [N], ``labels`` [N] or [1] JSON arrays of label strings."""
    tensors = {t.get("name"): t for t in body.get("inputs", []) if isinstance(t, dict)}
    if "text" not in tensors or "labels" not in tensors:
        return None
    texts = tensors["text"].get("data") or []
    label_sets = []
    for raw in tensors["labels"].get("data") or []:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            return None
        if not isinstance(parsed, list):
            return None
        label_sets.append(parsed)
    if len(label_sets) == 1:
        label_sets *= len(texts)
    return list(zip(texts, label_sets)) if len(label_sets) == len(texts) else None


def request_sentences(body: Any) -> list[tuple[str, list[str]]] | Skip:
    """(sentence, label set) per instance of a V1 or V2 request body."""
    if not isinstance(body, dict):
        return Skip("unknown_protocol", f"request body is {type(body).__name__}")
    if isinstance(body.get("instances"), list):
        out = []
        for inst in body["instances"]:
            if not isinstance(inst, dict) or not isinstance(inst.get("text"), str):
                return Skip("malformed_request", "an instance without text")
            labels = inst.get("labels")
            if not isinstance(labels, list) or not labels:
                return Skip("no_labels", "an instance without labels")
            out.append((inst["text"], [str(x) for x in labels]))
        return out
    pairs = _v2_inputs(body)
    if pairs is None:
        return Skip("unknown_protocol", "neither V1 instances nor V2 text/labels tensors")
    if not all(isinstance(t, str) and isinstance(ls, list) and ls for t, ls in pairs):
        return Skip("no_labels", "a V2 sentence without labels")
    return [(t, [str(x) for x in ls]) for t, ls in pairs]


def response_predictions(body: Any) -> list[dict[str, Any]] | Skip:
    """Per-sentence predictions (entities, ungrounded, parse_error) of a V1 or V2 response body."""
    if isinstance(body, dict) and isinstance(body.get("predictions"), list):
        return [p if isinstance(p, dict) else {} for p in body["predictions"]]
    if isinstance(body, dict) and isinstance(body.get("outputs"), list):
        tensors = {o.get("name"): o.get("data") or [] for o in body["outputs"] if isinstance(o, dict)}
        if "entities" not in tensors:
            return Skip("unknown_protocol", "a V2 response without the entities tensor")
        try:
            entities = [json.loads(x) if isinstance(x, str) else x for x in tensors["entities"]]
            ungrounded = [json.loads(x) if isinstance(x, str) else x for x in tensors.get("ungrounded", [])]
        except json.JSONDecodeError:
            return Skip("malformed_response", "an entities/ungrounded tensor value is not JSON")
        errors = tensors.get("parse_error", [])
        return [{"entities": ents, "ungrounded": ungrounded[i] if i < len(ungrounded) else [],
                 "parse_error": (errors[i] or None) if i < len(errors) else None} for i, ents in enumerate(entities)]
    return Skip("unknown_protocol", "neither V1 predictions nor a V2 entities tensor")


def records_from_pair(request: LoggedEvent, response: LoggedEvent | None) -> list[dict[str, Any]] | Skip:
    """One canonical logged record per sentence of a joined request/response."""
    sentences = request_sentences(request.body)
    if isinstance(sentences, Skip):
        return sentences
    predictions: list[dict[str, Any]] = []
    if response is not None:
        got = response_predictions(response.body)
        if isinstance(got, Skip):
            return got
        predictions = got
        if len(predictions) != len(sentences):
            return Skip("mismatched_pair", f"{len(sentences)} sentences, {len(predictions)} predictions")
    version = (response.body.get("model_version") if response is not None and isinstance(response.body, dict) else None)
    records = []
    for index, (text, labels) in enumerate(sentences):
        pred = predictions[index] if predictions else {}
        records.append({
            "id": f"{request.id}-{index}",
            "event_id": request.id,
            "text": text,
            "labels": labels,
            "entities": pred.get("entities", []),
            "ungrounded": pred.get("ungrounded", []),
            "parse_error": pred.get("parse_error"),
            "model_version": version or request.attributes.get("ce-modelversion") or "",
            "service": request.service,
            "namespace": request.namespace,
            "component": request.component,
            "endpoint": request.endpoint,
            "time": request.time,
        })
    return records
