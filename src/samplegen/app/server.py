"""The instrument's local web server (FastAPI): the page, its assets and a small JSON API.

Each gesture is one POST that answers with a rendered note; the note's WAV is fetched (or saved)
from ``/api/renders/{id}.wav``, its latent point from ``/api/renders/{id}.latent.json``. A sound
file of the user's own is POSTed to ``/api/encode`` and answered the same way. Rendering is
latest-only per client: a page sends a ``client`` id and an increasing ``seq`` with each gesture,
and a request that a newer one from the same client has overtaken is answered 409 without being
rendered, so stale work never queues. A gesture may ask for a ``draft`` (fewer phase-retrieval
iterations, for a drag in progress; the page asks for the full note when the hand rests).

A web page on another site must not reach the instrument through the user's browser: requests whose
``Host`` is not a name the server was started for are refused (DNS rebinding), no response may be
framed by another page (clickjacking), and a connection that never finishes its headers is closed.
The API docs (``/api/docs``) load Swagger UI from files served here, not from a CDN, so they work offline.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Annotated, Any, Callable, Iterable, Iterator, Literal, MutableMapping

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from samplegen.training.distributed import resolve_device
from samplegen.app.instrument import KNOB_RANGE, MAX_AMOUNT, MAX_TEMPERATURE, MAX_KNOBS, Instrument, Note
from samplegen.audio.audio_io import SUPPORTED_EXTENSIONS, read_audio
from samplegen.checkpoint import load_run
from samplegen.errors import AudioError, ParameterError
from samplegen.files import atomic_write, safe_file_stem
from samplegen.generation.generate import MAX_ABS_LATENT, latent_point

#: Largest request body accepted (a latent point and a few numbers fit in well under 4 KB).
MAX_BODY_BYTES = 16_384
#: Largest sound file accepted by /api/encode (a minute of 24-bit stereo WAV at 96 kHz is 35 MB; only the
#: note's first seconds are used).
MAX_UPLOAD_BYTES = 40 * 1024**2
ENCODE_PATH = "/api/encode"
#: Rendered notes kept for playing and saving; older ones are forgotten (memory stays flat).
RENDER_CACHE = 128
#: Clients whose latest sequence number is remembered.
MAX_CLIENTS = 4096
MAX_LATENT = 1024
#: Names that always reach this machine alone; a request for any other host needs the server's --host.
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: A connection must finish each request's headers within this many seconds (slow-header clients).
HEADER_TIMEOUT_S = 10.0
#: Where Swagger UI's script, style sheet and icon are served for /api/docs (fastapi-offline ships them).
DOCS_ASSETS = "/api/docs-assets"
#: Sent with every response: no other page may frame the instrument.
FRAME_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]

#: Latent values are bounded while parsing (generate's bound); each run's own, tighter bound is checked by the instrument.
Latent = Annotated[float, Field(ge=-MAX_ABS_LATENT, le=MAX_ABS_LATENT, allow_inf_nan=False)]
ClientId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Seq = Annotated[int, Field(ge=0, le=2**53)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Quality = Literal["draft", "full"]
RENDER_ID = re.compile(r"^[0-9a-f]{32}$")


class Gesture(BaseModel):
    """Fields every rendering request carries: latest-only scheduling, and how finely to render."""

    model_config = ConfigDict(extra="forbid")
    client: ClientId | None = None
    seq: Seq = 0
    quality: Quality = "full"


class RenderRequest(Gesture):
    z: list[Latent] = Field(min_length=1, max_length=MAX_LATENT)
    name: str | None = Field(None, min_length=1, max_length=80)  # a favourite's or preset's name


class CorpusRequest(Gesture):
    pass


class BlendRequest(Gesture):
    corners: list[Annotated[int, Field(ge=0)]] = Field(min_length=4, max_length=4)
    x: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    y: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class SurpriseRequest(Gesture):
    temperature: Annotated[float, Field(gt=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)] = 1.0
    seed: Seed | None = None


class VaryRequest(Gesture):
    z: list[Latent] = Field(min_length=1, max_length=MAX_LATENT)
    amount: Annotated[float, Field(ge=0.0, le=MAX_AMOUNT, allow_inf_nan=False)] = 0.5
    seed: Seed | None = None


class KnobRequest(Gesture):
    z: list[Latent] = Field(min_length=1, max_length=MAX_LATENT)
    positions: list[Annotated[float, Field(ge=-KNOB_RANGE, le=KNOB_RANGE, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=MAX_KNOBS)


class Spectrogram(BaseModel):
    rows: int
    cols: int
    data: str  # base64 of rows*cols uint8, row-major, low frequencies first


class RenderResponse(BaseModel):
    id: str
    z: list[float]
    map: list[float]
    knobs: list[float]
    wav: str
    latent: str
    quality: Quality
    loop: list[int] | None
    peak: float
    rms_db: float
    source: str
    root: float = Field(description="MIDI key (fractional) at which the sound plays at its measured pitch; "
                                    "play key k at rate 2^((k - root)/12) to be in tune")
    render_ms: float
    spectrogram: Spectrogram


class Superseded(Exception):
    """A newer request from the same client overtook this one."""


class LatestOnly:
    """Runs at most ``parallel`` renders at once; a client's request overtaken by a newer one is dropped."""

    def __init__(self, parallel: int = 1):
        self._slots = threading.Semaphore(max(1, parallel))
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, int] = OrderedDict()

    def _stale(self, client: str, seq: int) -> bool:
        with self._lock:
            return seq < self._latest.get(client, -1)

    def run(self, client: str | None, seq: int, job: Callable[[], Note]) -> Note:
        if client is not None:
            with self._lock:
                if seq < self._latest.get(client, -1):
                    raise Superseded
                self._latest[client] = seq
                self._latest.move_to_end(client)
                while len(self._latest) > MAX_CLIENTS:
                    self._latest.popitem(last=False)
        with self._slots:
            if client is not None and self._stale(client, seq):
                raise Superseded
            return job()


@dataclass(frozen=True)
class Stored:
    """One rendered note as it is downloaded: its WAV, its ``.latent.json`` and their common file stem."""

    wav: bytes
    latent: bytes
    stem: str


class RenderStore:
    """The last :data:`RENDER_CACHE` rendered notes, by id."""

    def __init__(self, size: int = RENDER_CACHE):
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def put(self, item: Stored) -> str:
        rid = secrets.token_hex(16)
        with self._lock:
            self._items[rid] = item
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return rid

    def get(self, rid: str) -> Stored | None:
        with self._lock:
            return self._items.get(rid)


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes (``uploads[path]`` for an upload path) get 413
    before any route reads them."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES, uploads: dict[str, int] | None = None):
        self.app, self.default, self.uploads = app, limit, uploads or {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.uploads.get(scope.get("path", ""), self.default)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_big(scope, receive, send)
            return
        body, more = b"", True
        while more:  # read (at most limit + 1 bytes of) the body, then replay it to the app
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await too_big(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port and IPv6 brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class LocalOrigin:
    """ASGI middleware: 400 for a ``Host`` the server was not started for; frame-blocking headers on the rest.

    A page on another site can rebind its own DNS name to 127.0.0.1, but its requests still carry that
    name in ``Host``. Accepted: the loopback names, the ``--host`` given, and, when listening on every
    interface, any IP address (an address is never rebound; a name is).
    """

    def __init__(self, app: Any, hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = LOOPBACK | {host_name(h) for h in hosts}
        self.any_address = bool(self.hosts & {"0.0.0.0", "::"})

    def allowed(self, name: str) -> bool:
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def framed(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *FRAME_HEADERS]}
            await send(message)

        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if not self.allowed(host_name(host)):
            refused = JSONResponse({"detail": "this server answers only requests for the host it was started "
                                              "for (127.0.0.1, localhost, ::1 or its --host)"}, status_code=400)
            await refused(scope, receive, framed)
            return
        await self.app(scope, receive, framed)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request headers take over HEADER_TIMEOUT_S.

    uvicorn has no such option: its keep-alive timer stops at a request's first byte, so a client that
    sends its headers a byte a minute would hold a connection (and a file descriptor) for ever.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timeout()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timeout()

    def _arm_header_timeout(self) -> None:
        waiting_for = self.cycle  # a new request replaces it as soon as its headers are complete

        def expire() -> None:
            if self.cycle is waiting_for and not self.transport.is_closing():
                self.transport.close()

        self.loop.call_later(HEADER_TIMEOUT_S, expire)


def uvicorn_config(app: FastAPI, **options: Any) -> Any:
    """uvicorn's config with the header timeout (tests and ``samplegen play`` serve alike)."""
    import uvicorn

    return uvicorn.Config(app, log_level="warning", http=HeaderTimeoutH11, **options)


def static_dir() -> Path:
    return Path(str(resources.files("samplegen.app") / "static"))


def create_app(instrument: Instrument, *, parallel: int = 1, title: str = "SampleGen",
               hosts: Iterable[str] = ()) -> FastAPI:
    """The instrument's app for one trained run (uvicorn serves it; tests drive it with TestClient).

    hosts : names or addresses the server is reached by besides the loopback ones (its ``--host``)
    """
    app = _offline_app(title)
    _add_error_handlers(app)
    renderer = Renderer(instrument, LatestOnly(parallel), RenderStore())
    _add_page_routes(app, renderer)
    _add_gesture_routes(app, renderer)
    _add_encode_route(app, renderer)
    _add_download_routes(app, renderer.store)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    app.add_middleware(BodyLimit, uploads={ENCODE_PATH: MAX_UPLOAD_BYTES})
    app.add_middleware(LocalOrigin, hosts=list(hosts))
    return app


def _offline_app(title: str) -> FastAPI:
    """A FastAPI app whose API docs (``/api/docs``) work offline.

    FastAPI's own docs page loads Swagger UI from a CDN (blank offline); validatorUrl None keeps Swagger UI
    from sending the description's URL to swagger.io for its validity badge.
    """
    return FastAPIOffline(title=f"{title} instrument", version="1", docs_url="/api/docs", redoc_url=None,
                          openapi_url="/api/openapi.json", static_url=DOCS_ASSETS,
                          swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
                          swagger_ui_parameters={"validatorUrl": None})


def _add_error_handlers(app: FastAPI) -> None:
    """A bad parameter or request is a 422 that says where and what; an overtaken gesture a 409."""

    @app.exception_handler(ParameterError)
    async def bad_parameter(request: Request, exc: ParameterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: echoing the input back could itself fail (NaN is not JSON) or reflect junk.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Superseded)
    async def superseded(request: Request, exc: Superseded) -> JSONResponse:
        return JSONResponse({"detail": "superseded by a newer request from the same client"}, status_code=409)


class Renderer:
    """Turns a gesture into a rendered note: scheduled latest-only, stored for download, answered as JSON."""

    def __init__(self, instrument: Instrument, scheduler: LatestOnly, store: RenderStore) -> None:
        self.instrument, self.scheduler, self.store = instrument, scheduler, store
        run = instrument.run
        #: The corpus map: each corpus note's name, family, split and place on the 2-D map.
        self.points: list[dict[str, Any]] = [
            {"id": i, "name": n, "family": f or "unknown", "split": s, "x": round(float(xy[0]), 4), "y": round(float(xy[1]), 4)}
            for i, (n, f, s, xy) in enumerate(zip(run.corpus.names, run.corpus.families, run.corpus.splits,
                                                    instrument.map_points))
        ]

    def respond(self, req: Gesture, make_z: Callable[[], np.ndarray], source: str) -> RenderResponse:
        """Render ``make_z()`` unless a newer gesture of the same client overtakes it (then 409)."""

        def job() -> Note:
            return self.instrument.render(make_z(), source=source, draft=req.quality == "draft")

        start = time.perf_counter()
        note = self.scheduler.run(req.client, req.seq, job)
        point = latent_point(note.z, source, self.instrument.run.path.name)
        z = point["z"]
        latent = json.dumps(point, indent=2).encode()
        rid = self.store.put(Stored(wav=note.wav, latent=latent, stem=f"samplegen-{safe_file_stem(source)}"))
        spec = note.spectrogram
        return RenderResponse(
            id=rid, z=z, map=list(note.map_xy), knobs=note.knobs, quality="draft" if note.draft else "full",
            wav=f"/api/renders/{rid}.wav", latent=f"/api/renders/{rid}.latent.json",
            loop=list(note.loop) if note.loop else None, peak=note.peak,
            rms_db=note.rms_db, source=source, root=note.root, render_ms=(time.perf_counter() - start) * 1000,
            spectrogram=Spectrogram(rows=spec.shape[0], cols=spec.shape[1],
                                    data=base64.b64encode(spec.tobytes()).decode()),
        )

    def known_sound(self, index: int) -> int:
        """``index`` when the corpus has such a sound, else 404."""
        if not 0 <= index < len(self.points):
            raise HTTPException(404, f"sound {index} does not exist; this run has sounds 0 to {len(self.points) - 1}")
        return index


def _add_page_routes(app: FastAPI, renderer: Renderer) -> None:
    """The page itself and what it asks first: the run, its map, its knobs."""
    instrument, run, points = renderer.instrument, renderer.instrument.run, renderer.points

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """The run, its corpus map, the knobs and the pad's default corners."""
        return {
            "run": run.path.name, "latent_dim": instrument.latent_dim, "sample_rate": run.config.data.sample_rate,
            "n_samples": instrument.n_samples, "duration_s": run.config.data.duration_s, "model": run.config.model.kind,
            "points": points, "families": sorted({p["family"] for p in points}),
            "knobs": [{"index": k.index, "label": k.label, "hint": k.hint, "effect": round(k.effect, 3)}
                      for k in instrument.knobs],
            "knob_range": KNOB_RANGE, "corners": instrument.default_corners(), "view": list(instrument.map_view()),
            "limits": {"z": instrument.z_limit, "temperature": MAX_TEMPERATURE, "amount": MAX_AMOUNT},
        }


def _add_gesture_routes(app: FastAPI, renderer: Renderer) -> None:
    """One POST per gesture on the page, each answered with a rendered note."""
    instrument, respond, known_sound = renderer.instrument, renderer.respond, renderer.known_sound

    @app.post("/api/render", response_model=RenderResponse)
    def render(req: RenderRequest) -> RenderResponse:
        """Render a latent point (a favourite recalled, a preset loaded, an undo)."""
        return respond(req, lambda: instrument.check_z(req.z), req.name or "point")

    @app.post("/api/sounds/{index}", response_model=RenderResponse)
    def corpus_sound(index: int, req: CorpusRequest) -> RenderResponse:
        """A corpus sound as the model re-creates it (a click on the map)."""
        i = known_sound(index)
        return respond(req, lambda: instrument.corpus_point(i), renderer.points[i]["name"])

    @app.post("/api/blend", response_model=RenderResponse)
    def blend(req: BlendRequest) -> RenderResponse:
        """The XY pad: four corner sounds blended at (x, y)."""
        for c in req.corners:
            known_sound(c)
        return respond(req, lambda: instrument.blend(req.corners, req.x, req.y), f"pad {req.x:.2f},{req.y:.2f}")

    @app.post("/api/surprise", response_model=RenderResponse)
    def surprise(req: SurpriseRequest) -> RenderResponse:
        """A random draw from the prior at a temperature."""
        seed = secrets.randbelow(2**32) if req.seed is None else req.seed
        return respond(req, lambda: instrument.surprise(req.temperature, seed), f"surprise T{req.temperature:g} s{seed}")

    @app.post("/api/vary", response_model=RenderResponse)
    def vary(req: VaryRequest) -> RenderResponse:
        """The current sound nudged by an amount."""
        seed = secrets.randbelow(2**32) if req.seed is None else req.seed
        return respond(req, lambda: instrument.vary(req.z, req.amount, seed), f"vary {req.amount:g} s{seed}")

    @app.post("/api/knobs", response_model=RenderResponse)
    def knobs(req: KnobRequest) -> RenderResponse:
        """The current sound with its macro knobs set to new positions."""
        return respond(req, lambda: instrument.turn_knobs(req.z, req.positions), "knobs")


def _add_encode_route(app: FastAPI, renderer: Renderer) -> None:
    """A dropped sound file: read from a private temporary folder, encoded, answered as a rendered note."""

    @app.post(ENCODE_PATH, response_model=RenderResponse,
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}})
    async def encode(request: Request, name: Annotated[str, Query(min_length=1, max_length=255)],
                     client: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
                     seq: Annotated[int, Query(ge=0, le=2**53)] = 0) -> RenderResponse:
        """A sound file of your own (the request body; ``name`` its file name): encoded, rendered, placed on the map."""
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            raise HTTPException(422, f"{name!r} is not a sound file this instrument reads; drop a "
                                     f"{', '.join(SUPPORTED_EXTENSIONS)} file")
        data = await request.body()

        def point() -> np.ndarray:
            with TemporaryDirectory(prefix="samplegen-drop-") as tmp:
                path = atomic_write(Path(tmp) / f"drop{suffix}", lambda fh: fh.write(data), error=ParameterError)
                try:
                    audio = read_audio(path)
                except AudioError as exc:
                    raise ParameterError(f"{name}: {exc}; drop another sound file") from None
            return renderer.instrument.encode(audio)

        return await run_in_threadpool(renderer.respond, Gesture(client=client, seq=seq), point, Path(name).stem)


def _add_download_routes(app: FastAPI, store: RenderStore) -> None:
    """A rendered note's WAV and its latent point, as attachments, while the store remembers it."""

    def stored(render_id: str) -> Stored:
        if not RENDER_ID.match(render_id):
            raise HTTPException(404, "no such render; render ids are 32 hex digits")
        item = store.get(render_id)
        if item is None:
            raise HTTPException(404, "this render has been forgotten; render the sound again")
        return item

    def attachment(filename: str) -> dict[str, str]:
        return {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "private, max-age=3600"}

    @app.get("/api/renders/{render_id}.wav", response_class=Response,
             responses={200: {"content": {"audio/wav": {}}}, 404: {}})
    def render_wav(render_id: str) -> Response:
        """A rendered note as a 24-bit WAV (with its sustain loop in a 'smpl' chunk when it has one)."""
        item = stored(render_id)
        return Response(item.wav, media_type="audio/wav", headers=attachment(f"{item.stem}.wav"))

    @app.get("/api/renders/{render_id}.latent.json", response_class=Response,
             responses={200: {"content": {"application/json": {}}}, 404: {}})
    def render_latent(render_id: str) -> Response:
        """A rendered note's latent point, as the generation commands write it (a preset: ``samplegen`` reopens it)."""
        item = stored(render_id)
        return Response(item.latent, media_type="application/json", headers=attachment(f"{item.stem}.latent.json"))


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the ``with`` block; yields its base URL (tests, benchmarks)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the instrument's server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve(run_path: str | Path, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
          log: Callable[[str], None] = print, device: str = "auto") -> None:
    """Load a run and serve its instrument until interrupted (``samplegen play``); it decodes on ``device`` ("auto":
    a GPU when there is one)."""
    import socket
    import webbrowser

    import uvicorn


    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ParameterError(f"port={port!r} must be an integer from 0 to 65535 (0 picks a free one)")
    device = resolve_device(device)
    if host not in LOOPBACK:
        log(f"warning: serving on {host}: anyone who can reach this machine can use the instrument "
            f"(use --host 127.0.0.1 to keep it local)")
    # The port is taken before the run is loaded: a busy port is said at once, not after the loading.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE or exc.errno == errno.EACCES:
            fix = "pass --port with a free port, or --port 0 for any"
        else:  # no such host, or an address this machine does not have
            fix = "pass --host with an address of this machine (127.0.0.1, the default, for this computer alone)"
        raise ParameterError(f"cannot listen on {host}:{port} ({exc.strerror}); {fix}") from None
    try:
        log(f"loading {run_path} and measuring what its knobs do ...")
        app = create_app(Instrument(load_run(run_path, device)), hosts=[host])
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{bound}/"
    server = uvicorn.Server(uvicorn_config(app, timeout_graceful_shutdown=2))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            log(f"instrument for {Path(run_path).name} at {url}  (Ctrl+C stops it)")
            if open_browser:
                webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
