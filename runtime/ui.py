"""The web UI: a hub's instances, histories, what each waits for, entities, and the usual fixes.

``ray-durable ui`` and :meth:`TaskHub.serve_ui` serve it; :func:`create_app` builds the ASGI
application (Starlette, pages rendered on the server by :mod:`runtime._ui_pages`) for any
``source`` that reads a hub the way ``TaskHub`` does: a running hub (live: actions work) or
:class:`runtime._readonly.HubFiles` (read-only, from the files, when no hub runs).

It listens on 127.0.0.1 unless told otherwise; any other address must be asked for explicitly
(``allow_remote=True``, ``--allow-remote``), and every page says it has no authentication.
Actions (raise an event, terminate, suspend, resume, rewind, restart, purge) each go through a
confirmation page and a POST; a GET never changes anything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from entities import EntityId
from orchestrations import DurableError, DurableValueError
from orchestrations._registry import Registry, default_registry

from ._render import timestamp
from ._status import OrchestrationRuntimeStatus
from ._times import parse_time
from ._ui_pages import render
from ._ui_views import episodes, show, timeline, waiting_for

#: the actions a live hub offers, and which of them apply to which statuses (None: any)
ACTIONS: dict[str, set[str] | None] = {
    "raise": {"Running", "Pending", "Suspended"},
    "terminate": {"Running", "Pending", "Suspended"},
    "suspend": {"Running"},
    "resume": {"Suspended"},
    "rewind": {"Failed"},
    "restart": None,
    "purge": {"Completed", "Failed", "Terminated"},
}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger(__name__)
MAX_PAGE_SIZE = 500


class UIConfig:
    """What every page needs to know: the hub's name, whether actions are possible, the address
    served, and the registry whose code tells which events an instance awaits."""

    def __init__(self, hub: str, live: bool, bind: str, registry: Registry | None) -> None:
        self.hub, self.live, self.bind, self.registry = hub, live, bind, registry

    def page(self, template: str, request: Request, **values: Any) -> HTMLResponse:
        return HTMLResponse(render(
            template, hub=self.hub, mode="live" if self.live else "read-only", read_only=not self.live,
            authenticated=False, bind=self.bind, message=request.query_params.get("message", ""), **values,
        ))


def create_app(
    source: Any, hub_name: str, *, live: bool, bind: str = "127.0.0.1", registry: Registry | None = None
) -> Starlette:
    """The UI for ``source`` (a ``TaskHub`` when ``live``, else a ``HubFiles``); ``registry``
    (default: this process's decorated orchestrators) lets it name the events an instance's
    code awaits."""
    ui = UIConfig(hub_name, live, bind, registry if registry is not None else default_registry)

    async def home(_: Request) -> Response:
        return RedirectResponse("/instances", status_code=302)

    async def instances(request: Request) -> Response:
        return _safely(ui, request, lambda: _instances_page(ui, source, request))

    async def instance(request: Request) -> Response:
        return _safely(ui, request, lambda: _instance_page(ui, source, request))

    async def confirm(request: Request) -> Response:
        return _safely(ui, request, lambda: _confirm_page(ui, request))

    async def act(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        return _safely(ui, request, lambda: _act(ui, source, request, form))

    async def entities(request: Request) -> Response:
        return _safely(ui, request, lambda: _entities_page(ui, source, request))

    async def entity(request: Request) -> Response:
        return _safely(ui, request, lambda: _entity_page(ui, source, request))

    app = Starlette(routes=[
        Route("/", home),
        Route("/instances", instances),
        Route("/instances/{instance_id:path}/{action:str}", confirm, methods=["GET"]),
        Route("/instances/{instance_id:path}/{action:str}", act, methods=["POST"]),
        Route("/instances/{instance_id:path}", instance),
        Route("/entities", entities),
        Route("/entities/{entity_id:path}", entity),
    ])
    app.state.ui = ui
    return app


def _safely(ui: UIConfig, request: Request, build: Callable[[], Response]) -> Response:
    """``build()``; a mistake in the request (a bad filter, an unknown id) is shown on the page
    with status 400 or 404, never a traceback."""
    try:
        return build()
    except (DurableValueError, ValueError, KeyError) as exc:
        status = 404 if "not found" in str(exc).lower() or isinstance(exc, KeyError) else 400
        response = ui.page("base", request, error=str(exc))
        response.status_code = status
        return response
    except DurableError as exc:
        response = ui.page("base", request, error=f"{type(exc).__name__}: {exc}")
        response.status_code = 409
        return response
    except Exception as exc:  # a fault of the hub or of this page: said on the page, and logged
        log.exception("durable UI: %s %s failed", request.method, request.url.path)
        response = ui.page("base", request, error=f"This page failed: {type(exc).__name__}: {exc}")
        response.status_code = 500
        return response


# -- instances --------------------------------------------------------------------------------------


def _instances_page(ui: UIConfig, source: Any, request: Request) -> Response:
    q = request.query_params
    status, name, prefix = q.get("status", ""), q.get("name", "").strip(), q.get("prefix", "").strip()
    size = _page_size(q.get("size", "50"))
    if status and status not in OrchestrationRuntimeStatus.__members__:
        raise DurableValueError(f"status {status!r} is not one of {', '.join(OrchestrationRuntimeStatus.__members__)}")
    rows: list[Any] = []
    token = q.get("token") or None
    page = source.list_instances(
        created_time_from=parse_time(q.get("from")), created_time_to=parse_time(q.get("to")),
        runtime_status=[OrchestrationRuntimeStatus[status]] if status else None, page_size=size,
        continuation_token=token,
        instance_id_prefix=prefix or None, name=name or None,
    )
    rows = [_instance_row(s) for s in page.instances]
    next_url = None
    if page.continuation_token:
        params = {k: v for k, v in q.items() if k != "token"}
        next_url = "/instances?" + urlencode({**params, "token": page.continuation_token})
    filters = {"status": status, "name": name, "prefix": prefix, "created_from": q.get("from", ""),
               "created_to": q.get("to", ""), "size": size}
    return ui.page("instances", request, rows=rows, f=filters, statuses=list(OrchestrationRuntimeStatus.__members__),
                   next_url=next_url)


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise DurableValueError(f"page size {text!r} is not a whole number") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise DurableValueError(f"page size {size} is not between 1 and {MAX_PAGE_SIZE}")
    return size


def _instance_row(s: Any) -> dict[str, Any]:
    return {"instance_id": s.instance_id, "name": s.name, "runtime_status": str(s.runtime_status),
            "created": timestamp(s.created_time), "updated": timestamp(s.last_updated_time),
            "output": show(s.output, 60)}


def _instance_page(ui: UIConfig, source: Any, request: Request) -> Response:
    iid = request.path_params["instance_id"]
    status = source.get_status(iid)
    if status is None:
        raise KeyError(f"instance {iid!r} not found")
    history = source.get_history(iid)
    started = next((e for e in history if e.event_type == "ExecutionStarted"), None)
    parent = getattr(getattr(started, "parent", None), "instance_id", None)
    children = [e.instance_id for e in history if e.event_type == "SubOrchestrationInstanceCreated"]
    waiting = [
        {"kind": w.kind, "what": w.what, "since": timestamp(w.since) if w.since else "",
         "fires_at": timestamp(w.fires_at) if w.fires_at else ""}
        for w in waiting_for(history, ui.registry, iid)
    ]
    failure = status.failure_details
    return ui.page(
        "instance", request, s=status, created=timestamp(status.created_time),
        updated=timestamp(status.last_updated_time), input=show(status.input_, None), output=show(status.output, None),
        custom=show(status.custom_status, None), failure=_failure_text(failure), parent=parent,
        children=children, waiting=waiting, timeline=timeline(history), episodes=episodes(history),
        actions=_actions_for(ui, str(status.runtime_status)),
    )


def _failure_text(failure: Any) -> str:
    if failure is None:
        return ""
    details = getattr(failure, "details", None)
    return f"{failure.error_type}: {failure.message}" + (f"\n{details}" if details else "")


def _actions_for(ui: UIConfig, status: str) -> list[str]:
    if not ui.live:
        return []
    return [name for name, allowed in ACTIONS.items() if allowed is None or status in allowed]


def _confirm_page(ui: UIConfig, request: Request) -> Response:
    action = _action(ui, request)
    return ui.page("confirm", request, action=action, instance_id=request.path_params["instance_id"],
                   event=request.query_params.get("event", ""))


def _action(ui: UIConfig, request: Request) -> str:
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise KeyError(f"action {action!r} not found (actions: {', '.join(ACTIONS)})")
    if not ui.live:
        raise DurableValueError(f"{action} needs the hub {ui.hub!r} running; this page only reads its files")
    return action


def _act(ui: UIConfig, source: Any, request: Request, form: dict[str, Any]) -> Response:
    action, iid = _action(ui, request), request.path_params["instance_id"]
    if form.get("confirm") != "yes":
        raise DurableValueError(f"{action} was not confirmed")
    reason = str(form.get("reason") or "") or None
    target = iid
    if action == "raise":
        event = str(form.get("event") or "").strip()
        if not event:
            raise DurableValueError("an event needs a name")
        source.raise_event(iid, event, _json_value(str(form.get("data") or "null")))
        message = f"Raised {event} to {iid}."
    elif action == "terminate":
        source.terminate(iid, reason)
        message = f"Terminated {iid}."
    elif action in ("suspend", "resume", "rewind"):
        getattr(source, action)(iid, reason)
        message = f"Asked {iid} to {action}."
    elif action == "restart":
        target = source.restart(iid)
        message = f"Restarted {iid} as {target}."
    else:
        source.purge_instance_history(iid)
        return RedirectResponse("/instances?" + urlencode({"message": f"Purged {iid}."}), status_code=303)
    return RedirectResponse(f"/instances/{quote(target)}?" + urlencode({"message": message}), status_code=303)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DurableValueError(f"event data {text!r} is not JSON: {exc}") from None


# -- entities ---------------------------------------------------------------------------------------


def _entity_row(meta: Any) -> dict[str, Any]:
    return {"id": str(meta.entity_id), "state": show(meta.entity_state), "locked_by": meta.locked_by,
            "queue": meta.queue_length, "modified": timestamp(meta.last_modified)}


def _entities_page(ui: UIConfig, source: Any, request: Request) -> Response:
    name = request.query_params.get("name", "").strip()
    rows = [_entity_row(m) for m in source.list_entities(name or None, include_deleted=True)]
    return ui.page("entities", request, rows=rows, name=name)


def _entity_page(ui: UIConfig, source: Any, request: Request) -> Response:
    key = request.path_params["entity_id"]
    entity_id = EntityId.parse(key)
    found = [m for m in source.list_entities(entity_id.name, include_deleted=True) if str(m.entity_id) == key]
    if not found:
        raise KeyError(f"entity {key!r} not found")
    return ui.page("entity", request, e=_entity_row(found[0]))


# -- serving ----------------------------------------------------------------------------------------


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse an address other than the local host unless ``allow_remote`` says so."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise DurableValueError(
            f"the UI has no authentication: binding to {host!r} would let anyone who reaches it change the hub; "
            "pass allow_remote=True (--allow-remote) if that is what you want"
        )


class UIServer:
    """A UI served by uvicorn on a daemon thread; :attr:`url` is where; :meth:`stop` ends it."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="durable-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise DurableValueError(f"the UI could not listen on {host}:{port} (is the port in use?)")
            time.sleep(0.02)
        bound = self._server.servers[0].sockets[0].getsockname()
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(10)


def serve(
    source: Any, hub_name: str, *, live: bool, host: str = "127.0.0.1", port: int = 0,
    allow_remote: bool = False, registry: Registry | None = None,
) -> UIServer:
    """Serve the UI for ``source`` on a background thread (``port=0``: any free port); returns
    the running server (its ``url``)."""
    check_bind(host, allow_remote)
    if not 0 <= port <= 65535:
        raise DurableValueError(f"port {port} is not between 0 and 65535")
    app = create_app(source, hub_name, live=live, bind=f"{host}:{port}", registry=registry)
    server = UIServer(app, host, port)
    app.state.ui.bind = server.url
    return server
