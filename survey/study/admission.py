"""What the server lets in: bounded request bodies, a queue share per room and per client, inputs of the right type.

Gradio has one queue with one size bound for every event. One client posting 64 demo
comparisons filled it, and for the next minute and a half every rater's next image was
refused with HTTP 503 "Queue is full" (issue #19). Here the study's events and the demo's
have separate bounds, one client may have only a few demo requests waiting or running at
once, and a request whose inputs are not of its components' types is refused before it is
queued: nothing runs and nothing is logged. Request bodies are bounded before they are read,
so a ``data:`` URL cannot carry a file past the upload limit.

Everything here hooks into Gradio at two points: ``Blocks._queue.push`` (private; checked at
start, so a Gradio that renamed it fails at once rather than silently letting floods through)
and the FastAPI app's middleware list (public: ``launch(app_kwargs=...)``).
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio import route_utils

STUDY_ROOM = "study"
DEMO_ROOM = "demo"


@dataclass(frozen=True)
class RoomLimit:
    waiting: int  # events of the room queued at once, all clients together
    per_client: int | None  # events of one client queued or running at once; None: no bound
    busy_message: str  # said when the room's queue is full


ROOM_LIMITS = {
    # Raters: many people, each with at most one request at a time; their events are light.
    STUDY_ROOM: RoomLimit(
        waiting=512, per_client=None,
        busy_message="The study is very busy right now; please press the button again in a moment.",
    ),
    # The demo: each comparison holds the CPU for seconds, so a short queue and a fair share.
    # A person's page has at most about three demo events in flight (a check, a comparison,
    # a zoom); six leaves room for an impatient double click.
    DEMO_ROOM: RoomLimit(
        waiting=32, per_client=6,
        busy_message="The demo is busy with other people's images; please try again in a minute.",
    ),
}
PER_CLIENT_MESSAGE = ("You already have {count} requests waiting or running; wait for your comparison "
                      "to finish, then try again.")


def room_of(concurrency_id: str | None, study_concurrency_id: str) -> str:
    return STUDY_ROOM if concurrency_id == study_concurrency_id else DEMO_ROOM


def client_key(host: str | None) -> str:
    """Whom the per-client limits count: the IPv4 address, or the /64 network of an IPv6 one
    (one subscriber commonly holds a whole /64, so single IPv6 addresses cost nothing)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_address(request: Any) -> str:
    """The client key of the address a request (Gradio's or FastAPI's) came from: behind a
    reverse proxy, the proxy's unless it forwards the client's in X-Forwarded-For (uvicorn
    trusts that header from the addresses in FORWARDED_ALLOW_IPS, by default 127.0.0.1)."""
    client = getattr(request, "client", None) if request is not None else None
    return client_key(getattr(client, "host", None))


# ---------------------------------------------------------------- input types


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _label(component: Any, index: int) -> str:
    return str(getattr(component, "label", None) or f"input {index + 1}")


def input_refusal(components: list[Any], data: list[Any] | None) -> str | None:
    """Why these raw inputs do not fit the components they are for, or None when they do.

    Only what the page itself could never send is refused; the handlers still check meaning
    (an image that does not decode, a score out of range). Components not listed here are left
    to Gradio and the handler.
    """
    if data is None:
        return None
    if not isinstance(data, list):
        return "The request's data must be a list of input values."
    if len(data) > len(components):
        return f"The request has {len(data)} inputs; this action takes {len(components)}."
    for index, (component, value) in enumerate(zip(components, data)):
        name = _label(component, index)
        if isinstance(component, (gr.Slider, gr.Number)):
            if value is None and isinstance(component, gr.Number):
                continue
            if not _is_number(value):
                return f"{name} must be a number, not {type(value).__name__} {str(value)[:40]!r}."
            low, high = component.minimum, component.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                return f"{name} must be from {low:g} to {high:g}, not {value:g}."
        elif isinstance(component, gr.Radio):
            choices = [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in component.choices]
            if value is not None and value not in choices:
                return f"{name} must be one of {', '.join(map(str, choices))}."
        elif isinstance(component, gr.Dropdown):  # choices change per session: the type only
            if value is not None and not isinstance(value, (str, int, float, list)):
                return f"{name} must be one of the listed choices."
        elif isinstance(component, gr.Checkbox):
            if value is not None and not isinstance(value, bool):
                return f"{name} must be true or false."
        elif isinstance(component, gr.Textbox):
            if value is not None and not isinstance(value, str):
                return f"{name} must be text."
        elif isinstance(component, (gr.Image, gr.File)):
            if value is not None and not _is_upload(value):
                return (f"{name} must be a file uploaded to this server first (POST it to /gradio_api/upload "
                        "and pass the path it returns).")
    return None


def _is_upload(value: Any) -> bool:
    """A file payload naming a file in Gradio's upload folder (or an inline data: URL).

    Gradio would refuse other paths itself, but with a message naming the server's folders
    and a traceback in the log for each call.
    """
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(value, dict) and path is None:
        return isinstance(value.get("url"), str) and value["url"].startswith("data:")
    if not isinstance(path, str) or "\x00" in path:
        return False
    if path.startswith("data:"):
        return True
    uploads = Path(gr.utils.get_upload_folder()).resolve()
    return Path(path).resolve().is_relative_to(uploads)


# ---------------------------------------------------------------- the queue


def _events_of(queue: Any, room: str, study_concurrency_id: str) -> tuple[list[Any], list[Any]]:
    """(queued, running) events of one room."""
    queued = [
        event
        for concurrency_id, event_queue in queue.event_queue_per_concurrency_id.items()
        if room_of(concurrency_id, study_concurrency_id) == room
        for event in event_queue.queue
    ]
    running = [
        event
        for job in queue.active_jobs if job
        for event in job
        if event is not None and room_of(event.concurrency_id, study_concurrency_id) == room
    ]
    return queued, running


def validation_detail(message: str) -> list[dict]:
    """A refusal in the form of Gradio's input validation (HTTP 422), which gradio_client and the
    page both show as the message itself (a 400 reaches a client as "400 Bad Request" only)."""
    return [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "input"}]


def admission_refusal(queue: Any, fn: Any, data: Any, client: str, study_concurrency_id: str,
                      limits: dict[str, RoomLimit] = ROOM_LIMITS) -> tuple[str | list, str] | None:
    """Why this event may not join the queue now, as (detail, Gradio's state: "validator_error"
    for a malformed request, answered 422; "queue_full" for one to send again later, 503), or None."""
    refusal = input_refusal(list(fn.inputs), data)
    if refusal is not None:
        return validation_detail(refusal), "validator_error"
    room = room_of(fn.concurrency_id, study_concurrency_id)
    limit = limits[room]
    queued, running = _events_of(queue, room, study_concurrency_id)
    if limit.per_client is not None:
        mine = sum(client_address(event.request) == client for event in queued + running)
        if mine >= limit.per_client:
            return PER_CLIENT_MESSAGE.format(count=mine), "queue_full"
    if len(queued) >= limit.waiting:
        return limit.busy_message, "queue_full"
    return None


def limit_queue(blocks: gr.Blocks, *, study_concurrency_id: str,
                limits: dict[str, RoomLimit] = ROOM_LIMITS) -> None:
    """Replace the queue's one global bound with the rooms' bounds (call after ``blocks.queue()``)."""
    queue = getattr(blocks, "_queue", None)
    if queue is None or not all(hasattr(queue, name) for name in
                                ("push", "event_queue_per_concurrency_id", "active_jobs", "max_size")):
        raise RuntimeError("this Gradio's queue has no push/event_queue_per_concurrency_id/active_jobs: "
                           "survey.study.admission needs updating for it")
    original_push: Callable = queue.push
    queue.max_size = None  # the rooms' bounds replace it

    async def push(body, request, username):
        try:
            fn = route_utils.get_fn(blocks, None, body)
        except Exception:  # an unknown function: Gradio answers that itself
            return await original_push(body=body, request=request, username=username)
        refusal = admission_refusal(queue, fn, body.data, client_address(request), study_concurrency_id, limits)
        if refusal is not None:
            message, state = refusal
            return False, message, state
        return await original_push(body=body, request=request, username=username)

    queue.push = push


# ---------------------------------------------------------------- request bodies


class BodySizeLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, before it is all read.

    Gradio bounds file uploads (``max_file_size``) but not the JSON of an API call, which can
    carry a whole file as a ``data:`` URL: a 200 MiB body was decoded in full before the
    image was refused. A declared Content-Length over the bound is refused unread; a body
    without one is counted as it arrives and cut off at the bound.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def message(self) -> str:
        return (f"The request is larger than this server accepts ({self.max_bytes / 2**20:.0f} MiB); "
                "send a smaller image or file.")

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": self.message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False  # the server itself refuses a malformed length
            if too_large:
                await self._refuse(send)
                return
        received = 0
        cut_off = False
        started = False

        async def counted_receive():
            nonlocal received, cut_off
            if cut_off:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut_off = True  # the app sees the client leave and stops reading
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal started
            if cut_off and not started:
                return  # the 413 below answers instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except Exception:
            if not cut_off:
                raise
        if cut_off and not started:
            await self._refuse(send)
