"""AWS test plumbing: moto (in-process or over HTTP), request counting and fault injection
through botocore's event hooks."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any, Callable

import urllib3
from botocore.awsrequest import AWSResponse

BUCKET = "rotator-test"


def count_requests(client: Any) -> Counter[str]:
    """Count every HTTP request the client sends (retries included), by operation."""
    counts: Counter[str] = Counter()

    def on_send(request: Any, **kwargs: Any) -> None:
        counts[kwargs.get("event_name", "").rsplit(".", 1)[-1]] += 1

    client.meta.events.register_first("before-send.s3", on_send)
    return counts


def inject_failures(client: Any, operation: str, status: int, code: str, times: int | None = None,
                    when: Callable[[Any], bool] = lambda request: True) -> Callable[[], int]:
    """Answer `operation` with an error status instead of sending it, `times` times (None: always).

    Returns a function telling how many requests were failed.
    """
    failed = 0

    def on_send(request: Any, **kwargs: Any) -> AWSResponse | None:
        nonlocal failed
        if (times is not None and failed >= times) or not when(request):
            return None
        failed += 1
        # botocore runs every before-send handler and uses the first response; moto's
        # in-process handler would still execute the request unless it no longer
        # matches an AWS host, so point it nowhere: nothing is sent, nothing stored.
        url, request.url = request.url, "https://fault-injected.invalid/"
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        raw = urllib3.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False)
        return AWSResponse(url, status, {"Content-Type": "application/xml"}, raw)

    client.meta.events.register_first(f"before-send.s3.{operation}", on_send)
    return lambda: failed


def ignore_conditional_writes(client: Any) -> None:
    """Make requests look like those to a store that silently ignores If-Match / If-None-Match."""

    def strip(request: Any, **kwargs: Any) -> None:
        for header in ("If-Match", "If-None-Match"):
            if header in request.headers:
                del request.headers[header]

    client.meta.events.register("before-sign.s3.PutObject", strip)
