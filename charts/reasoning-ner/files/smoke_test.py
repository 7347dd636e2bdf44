"""`helm test`: call the NER endpoint once and check that an entity comes back (standard library only).

Sends ``{"instances": [{"text": SENTENCE, "labels": LABELS}]}`` to PREDICT_URL (the V1 predict
route of the NER service) and passes when ``predictions[0].entities`` is not empty. Connection
errors, 5xx and 404 (the model not loaded yet) are retried until TIMEOUT_SECONDS; any other
answer fails at once. With CHECK=ready it only expects HTTP 200 from PREDICT_URL (a predictor
without the NER service). With API_KEY_FILE (the mounted API-key Secret) its first key is sent as
``Authorization: Bearer <key>``; the key itself is never printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request


def api_key(path: str) -> str:
    """The first key of the API-key file (one per line; blank lines and # comments skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            key = line.strip()
            if key and not key.startswith("#"):
                return key
    raise ValueError(f"{path} holds no API key")


def attempt(url: str, payload: bytes | None, timeout: float, key: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=payload, method="POST" if payload else "GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def main() -> int:
    url = os.environ["PREDICT_URL"]
    check = os.environ.get("CHECK", "predict")
    deadline = time.monotonic() + float(os.environ.get("TIMEOUT_SECONDS", "300"))
    request_timeout = float(os.environ.get("REQUEST_TIMEOUT_SECONDS", "120"))
    payload = None
    if check == "predict":
        instance = {"text": os.environ["SENTENCE"], "labels": json.loads(os.environ["LABELS"])}
        payload = json.dumps({"instances": [instance]}).encode()
    delay = float(os.environ.get("RETRY_DELAY_SECONDS", "2"))
    key = None
    if os.environ.get("API_KEY_FILE"):
        try:
            key = api_key(os.environ["API_KEY_FILE"])
        except (OSError, ValueError) as exc:
            print(f"FAIL: no API key to send: {exc}", flush=True)
            return 1
    while True:
        try:
            status, body = attempt(url, payload, request_timeout, key)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            status, body = 0, str(exc)
        if status == 200:
            break
        if status not in (0, 404) and status < 500:
            hint = (" (the API key was refused: check serving.transformer.auth.existingSecret)" if key else
                    " (the endpoint wants an API key: set serving.transformer.auth.existingSecret)") if status == 401 else ""
            print(f"FAIL: {url} answered HTTP {status}{hint}: {body[:1000]}", flush=True)
            return 1
        if time.monotonic() >= deadline:
            print(f"FAIL: {url} not ready in time (last: HTTP {status}: {body[:500]})", flush=True)
            return 1
        print(f"waiting for {url} (HTTP {status}); retrying in {delay:.0f}s", flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 15.0)
    if check != "predict":
        print(f"PASS: {url} is ready", flush=True)
        return 0
    try:
        entities = json.loads(body)["predictions"][0]["entities"]
    except (ValueError, KeyError, IndexError, TypeError):
        print(f"FAIL: unexpected response shape: {body[:1000]}", flush=True)
        return 1
    if not entities:
        print(f"FAIL: no entity found in {os.environ['SENTENCE']!r}: {body[:1000]}", flush=True)
        return 1
    found = ", ".join(f"{e.get('text')!r} ({e.get('label')})" for e in entities)
    print(f"PASS: {len(entities)} entities: {found}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
