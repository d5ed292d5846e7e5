"""The ASGI app of ``cnnzoo explore`` (Starlette): the JSON API over an
:class:`~cnnzoo.explore.engine.Explorer`, the static page, and the guard every request passes
(the token, the Host header). See ``docs/explore.md`` for the API.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cnnzoo.errors import CnnzooError
from cnnzoo.explore.engine import Explorer, NotFoundError, UploadError

COOKIE = "cnnzoo_explore_token"


def cookie_name(port: int | None) -> str:
    """The cookie of the server on ``port``: browsers share cookies across a host's ports, so
    two sessions on 127.0.0.1 must not overwrite each other's token."""
    return f"{COOKIE}_{port}" if port else COOKIE


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Headers every answer carries: the page loads nothing from elsewhere, and no other site may
# frame it or read its answers.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Guard:
    """Refuses a request with a foreign ``Host`` (DNS rebinding) or without the token (in the
    query string, ``?token=``, which sets the cookie, or in the cookie itself)."""

    def __init__(self, app: ASGIApp, token: str, hosts: tuple[str, ...] | None) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    def _matches(self, given: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a crafted query).
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.hosts is not None and name not in self.hosts:
            response: Response = PlainTextResponse(
                f"Host {host!r} is refused: open the address cnnzoo explore printed.", 403
            )
            await response(scope, receive, send)
            return
        given = request.query_params.get("token")
        name_of_cookie = cookie_name((scope.get("server") or (None, None))[1])
        cookie = request.cookies.get(name_of_cookie, "")
        if given is not None and self._matches(given):
            set_cookie = True
        elif cookie and self._matches(cookie):
            set_cookie = False
        else:
            response = PlainTextResponse(
                "a token is needed: open the address with ?token=... that cnnzoo explore printed.",
                403,
            )
            await response(scope, receive, send)
            return

        async def send_with_cookie(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for key, value in SECURITY_HEADERS.items():
                    headers.append((key.lower().encode(), value.encode()))
                if set_cookie:
                    cookie = f"{name_of_cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _neuron_at(request: Request) -> tuple[str, str, int, int, int, int]:
    """A neuron's address in the query: model, image, layer, channel, y, x."""
    q = request.query_params
    return (
        q.get("model", ""), q.get("image", ""), _int(request, "layer"),
        _int(request, "channel", 0), _int(request, "y", 0), _int(request, "x", 0),
    )  # fmt: skip


def _int(request: Request, name: str, default: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None:
        if default is None:
            raise NotFoundError(f"the request needs ?{name}=N.")
        return default
    try:
        return int(text)
    except ValueError:
        raise NotFoundError(f"?{name}={text!r} is not an integer.") from None


def _error(err: Exception) -> JSONResponse:
    if isinstance(err, UploadError):
        status = err.status
    elif isinstance(err, NotFoundError):
        status = 404
    else:
        status = 400
    return JSONResponse({"error": str(err)}, status)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    explorer: Explorer, token: str, hosts: tuple[str, ...] | None = LOCAL_HOSTS
) -> ASGIApp:
    """The app, guarded: ``hosts`` are the Host names accepted (``None``: any, for a server
    bound to every interface, where the token alone protects it)."""
    import anyio

    # torch work runs in threads, so that the event loop keeps answering; a few threads, not
    # anyio's default 40: the session's lock lets one answer run at a time anyway, and each
    # thread that has run a forward pass keeps its own malloc arena (tens of MB under load).
    limiter = anyio.CapacityLimiter(THREADS)

    async def run_in_threadpool(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def api(fn: Callable[[Request], Any]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                result = await run_in_threadpool(fn, request)
            except CnnzooError as err:
                return _error(err)
            except Exception as err:  # a bug or a model that breaks: say it, keep serving
                text = " ".join(str(err).split())[:200]
                return JSONResponse({"error": f"internal error: {type(err).__name__}: {text}"}, 500)
            if isinstance(result, bytes):
                return Response(result, media_type="image/png")
            return JSONResponse(result)

        return endpoint

    def session(request: Request) -> dict[str, Any]:
        return {
            "models": [
                {
                    "key": m.key,
                    "label": m.label,
                    "note": m.note,
                    "preprocessing": explorer.preprocessing(m.key),
                }
                for m in explorer.models.values()
            ],
            "images": [{"key": i.key, "name": i.name} for i in explorer.images.values()],
            "max_upload": explorer.max_upload,
            "max_pixels": explorer.max_pixels,
            "cache_bytes": explorer.cache_bytes,
            "notes": explorer.notes,
        }

    def graph(request: Request) -> dict[str, Any]:
        # With an image: the thumbnails (each layer's most active channels) and shortcuts.
        q = request.query_params
        return explorer.graph(q.get("model", ""), q.get("image") or None)

    def layer(request: Request) -> dict[str, Any]:
        q = request.query_params
        return explorer.layer(
            q.get("model", ""), q.get("image", ""), _int(request, "layer"), _int(request, "page", 0)
        )

    def channel(request: Request) -> bytes:
        q = request.query_params
        return explorer.channel_png(
            q.get("model", ""), q.get("image", ""), _int(request, "layer"),
            _int(request, "channel", 0),
        )  # fmt: skip

    def input_channel(request: Request) -> bytes:
        q = request.query_params
        return explorer.input_channel_png(
            q.get("model", ""), q.get("image", ""), _int(request, "layer"),
            _int(request, "channel", 0),
        )  # fmt: skip

    def neuron(request: Request) -> dict[str, Any]:
        return explorer.neuron(*_neuron_at(request))

    def receptive_field(request: Request) -> dict[str, Any]:
        return explorer.receptive_field(*_neuron_at(request))

    def topk(request: Request) -> dict[str, Any]:
        q = request.query_params
        return explorer.topk(q.get("model", ""), q.get("image", ""), _int(request, "k", 5))

    def cam(request: Request) -> bytes:
        q = request.query_params
        target = _int(request, "class") if "class" in q else None
        return explorer.cam_png(q.get("model", ""), q.get("image", ""), target)

    def input_image(request: Request) -> bytes:
        q = request.query_params
        return explorer.input_png(q.get("model", ""), q.get("image", ""))

    def filters(request: Request) -> bytes:
        return explorer.filters_png(request.query_params.get("model", ""))

    async def upload(request: Request) -> Response:
        # The body is the file itself (no multipart), read with the limit enforced as it comes.
        name = unquote(request.headers.get("x-filename", "upload"))[:200] or "upload"
        declared = request.headers.get("content-length")
        limit = explorer.max_upload
        too_big = UploadError(
            f"{name} is over the {limit / 1e6:.0f} MB limit: choose a smaller image.", 413
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(too_big)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                return _error(too_big)
        try:
            entry = await run_in_threadpool(explorer.add_image, bytes(data), name)
        except CnnzooError as err:
            return _error(err)
        return JSONResponse({"key": entry.key, "name": entry.name}, 201)

    async def static(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC_FILES:  # a fixed list: no path from the client reaches the disk
            return PlainTextResponse("not found", 404)
        data = resources.files("cnnzoo.explore").joinpath("static").joinpath(name).read_bytes()
        suffix = name[name.rfind(".") :]
        return Response(data, media_type=STATIC_TYPES[suffix])

    routes = [
        Route("/", static),
        Route("/static/{name}", static),
        Route("/api/session", api(session)),
        Route("/api/graph", api(graph)),
        Route("/api/layer", api(layer)),
        Route("/api/channel.png", api(channel)),
        Route("/api/input_channel.png", api(input_channel)),
        Route("/api/neuron", api(neuron)),
        Route("/api/receptive_field", api(receptive_field)),
        Route("/api/topk", api(topk)),
        Route("/api/cam.png", api(cam)),
        Route("/api/input.png", api(input_image)),
        Route("/api/filters.png", api(filters)),
        Route("/api/images", upload, methods=["POST"]),
    ]
    return Guard(Starlette(routes=routes), token, hosts)


STATIC_FILES = ("index.html", "app.js", "style.css")
THREADS = 4  # threads answering API requests (uploads decode in parallel, torch one at a time)
