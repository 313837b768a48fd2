"""The instrument: gestures as latent points (Instrument) and the HTTP API (FastAPI TestClient)."""

from __future__ import annotations

import io
import re
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from samplegen import cli
from samplegen.audio import estimate_pitch_hz, offset_from_c4_cents
from samplegen.checkpoint import load_run
from samplegen.instrument import KNOB_RANGE, Instrument, describe, principal_axes
from samplegen.server import MAX_BODY_BYTES, LatestOnly, Superseded, create_app
from samplegen.spectral import StftConfig


@pytest.fixture(scope="module")
def instrument(tiny_run) -> Instrument:
    return Instrument(load_run(tiny_run))


@pytest.fixture(scope="module")
def client(instrument) -> TestClient:
    with TestClient(create_app(instrument), base_url="http://127.0.0.1:8765") as c:
        yield c


# ---------------------------------------------------------------- the sound engine
def test_principal_axes_find_the_direction_of_largest_spread() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * np.array([0.1, 3.0, 0.5])
    mean, axes, sd = principal_axes(torch.from_numpy(x), 2)
    assert abs(abs(axes[0, 1]) - 1.0) < 1e-2
    assert sd[0] == pytest.approx(3.0, rel=0.1) and sd[1] == pytest.approx(0.5, rel=0.1)


def test_describe_ranks_known_spectra() -> None:
    cfg = StftConfig(n_fft=64, hop_length=16)
    dull, bright = torch.zeros(1, 33, 20), torch.zeros(1, 33, 20)
    dull[0, 2], bright[0, 20] = 1.0, 1.0
    assert describe(bright, cfg)["brightness"][0] > describe(dull, cfg)["brightness"][0] + 2
    fading = torch.ones(1, 33, 20) * torch.linspace(1, 0.01, 20)
    swelling = torch.ones(1, 33, 20) * torch.linspace(0.01, 1, 20)
    assert describe(fading, cfg)["decay"][0] < -5 < 5 < describe(swelling, cfg)["decay"][0]
    assert describe(fading, cfg)["attack"][0] == 0 and describe(swelling, cfg)["attack"][0] > 0
    noise = torch.ones(1, 33, 20)  # flat spectrum: flatness 0 dB; one harmonic: far below
    assert describe(noise, cfg)["noisiness"][0] == pytest.approx(0.0, abs=1e-6)
    assert describe(bright, cfg)["noisiness"][0] < -50


def test_knobs_set_the_projection_they_show(instrument: Instrument) -> None:
    z = instrument.corpus_point(0)
    wanted = np.linspace(-1, 1, len(instrument.knobs))
    moved = instrument.turn_knobs(z, wanted)
    assert np.allclose(instrument.knob_positions(moved), wanted, atol=1e-6)
    assert 1 <= len(instrument.knobs) <= 8 and all(k.label for k in instrument.knobs)
    labels = [k.label for k in instrument.knobs]
    assert len(set(labels)) == len(labels), labels


def test_every_corpus_point_is_playable_even_far_from_the_prior(instrument: Instrument) -> None:
    assert instrument.z_limit >= 2 * np.abs(instrument.mu).max()
    for i in range(len(instrument.mu)):
        instrument.check_z(instrument.corpus_point(i))
    far = instrument.corpus_point(0) * 0 + instrument.z_limit * 0.99
    assert np.allclose(instrument.check_z(far), far)


def test_pad_corners_are_the_corner_sounds(instrument: Instrument) -> None:
    corners = [0, 1, 2, 3]
    assert np.allclose(instrument.blend(corners, 0, 0), instrument.corpus_point(0))
    assert np.allclose(instrument.blend(corners, 1, 1), instrument.corpus_point(3))
    centre = instrument.blend(corners, 0.5, 0.5)
    assert np.allclose(centre, np.mean([instrument.corpus_point(i) for i in corners], axis=0))


def test_surprise_and_vary_are_seeded_and_scaled(instrument: Instrument) -> None:
    assert np.allclose(instrument.surprise(1.0, 5), instrument.surprise(1.0, 5))
    assert np.allclose(instrument.surprise(0.5, 5), 0.5 * instrument.surprise(1.0, 5))
    z = instrument.corpus_point(1)
    assert np.allclose(instrument.vary(z, 0.0, 3), z)
    assert not np.allclose(instrument.vary(z, 0.5, 3), z)


def test_render_is_a_playable_note(instrument: Instrument) -> None:
    note = instrument.render(instrument.corpus_point(2), source="test")
    audio, sr = sf.read(io.BytesIO(note.wav))
    assert sr == 44100 and len(audio) == instrument.n_samples
    assert 0.5 < np.max(np.abs(audio)) <= 0.9
    assert note.spectrogram.dtype == np.uint8 and note.spectrogram.shape[0] == 96 and note.spectrogram.max() == 255
    assert np.allclose(note.map_xy, instrument.map_points[2], atol=1e-5)
    # the keyboard's root: the note's own measured pitch as a (fractional) key, within a tritone of C4
    hz = estimate_pitch_hz(audio.astype(np.float32))
    assert hz is not None and note.root == pytest.approx(60 + offset_from_c4_cents(hz) / 100, abs=0.01)


# ---------------------------------------------------------------- the HTTP API
def test_info_describes_map_knobs_and_corners(client: TestClient, instrument: Instrument) -> None:
    info = client.get("/api/info").json()
    assert len(info["points"]) == len(instrument.mu) and info["latent_dim"] == instrument.latent_dim
    assert {"id", "name", "family", "x", "y"} <= set(info["points"][0])
    assert len(info["corners"]) == 4 and len(info["knobs"]) == len(instrument.knobs)


def test_each_gesture_renders_a_downloadable_wav(client: TestClient, instrument: Instrument) -> None:
    z0 = client.post("/api/sounds/0", json={}).json()["z"]
    requests = [("/api/sounds/3", {}), ("/api/blend", {"corners": [0, 1, 2, 3], "x": 0.3, "y": 0.8}),
                ("/api/surprise", {"temperature": 0.7, "seed": 1}), ("/api/vary", {"z": z0, "amount": 0.4}),
                ("/api/knobs", {"z": z0, "positions": [0.5] * len(instrument.knobs)}), ("/api/render", {"z": z0})]
    for url, body in requests:
        res = client.post(url, json=body)
        assert res.status_code == 200, (url, res.text)
        note = res.json()
        wav = client.get(note["wav"])
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        assert "attachment" in wav.headers["content-disposition"]
        audio, _ = sf.read(io.BytesIO(wav.content))
        assert len(audio) == instrument.n_samples and np.max(np.abs(audio)) > 0.1
        assert len(note["z"]) == instrument.latent_dim and len(note["map"]) == 2
        assert 54.0 <= note["root"] < 66.0  # the key the page plays it from: within a tritone of C4


def test_surprise_with_a_seed_repeats(client: TestClient) -> None:
    a = client.post("/api/surprise", json={"seed": 7}).json()["z"]
    b = client.post("/api/surprise", json={"seed": 7}).json()["z"]
    c = client.post("/api/surprise", json={"seed": 8}).json()["z"]
    assert a == b != c


@pytest.mark.parametrize("url, body, code, words", [
    ("/api/render", {"z": [0.0]}, 422, "latent size"),
    ("/api/render", {"z": [1e9, 0, 0]}, 422, "less than or equal"),
    ("/api/render", {"z": [500, 0, 0]}, 422, "for this run"),
    ("/api/render", {"z": []}, 422, "at least 1"),
    ("/api/render", {"z": [0, 0, 0], "colour": "red"}, 422, "extra"),
    ("/api/sounds/999999", {}, 404, "does not exist"),
    ("/api/sounds/-1", {}, 404, "does not exist"),
    ("/api/sounds/abc", {}, 422, "integer"),
    ("/api/blend", {"corners": [0, 1, 2, 99999], "x": 0.5, "y": 0.5}, 404, "does not exist"),
    ("/api/blend", {"corners": [0, 1, 2], "x": 0.5, "y": 0.5}, 422, "at least 4"),
    ("/api/blend", {"corners": [0, 1, 2, 3], "x": 1.5, "y": 0.5}, 422, "less than or equal"),
    ("/api/surprise", {"temperature": 0}, 422, "greater than"),
    ("/api/vary", {"z": [0, 0, 0], "amount": 99}, 422, "less than or equal"),
    ("/api/knobs", {"z": [0, 0, 0], "positions": [KNOB_RANGE + 1]}, 422, "less than or equal"),
    ("/api/render", {"z": [0, 0, 0], "client": "../../etc"}, 422, "pattern"),
])
def test_bad_input_gets_a_4xx_that_says_what_is_wrong(client: TestClient, url: str, body: dict, code: int,
                                                       words: str) -> None:
    res = client.post(url, json=body)
    assert res.status_code == code, res.text
    assert words in res.text


def test_non_finite_numbers_are_refused(client: TestClient) -> None:
    res = client.post("/api/render", content=b'{"z": [NaN, 0, 0]}', headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and "finite" in res.text


def test_oversized_bodies_are_refused_before_parsing(client: TestClient) -> None:
    big = b'{"z": [' + b"0," * MAX_BODY_BYTES + b"0]}"
    assert client.post("/api/render", content=big, headers={"Content-Type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(8):
            yield b" " * (MAX_BODY_BYTES // 4)

    assert client.post("/api/render", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 413


@pytest.mark.parametrize("path", ["/api/renders/0123.wav", "/api/renders/" + "a" * 32 + ".wav",
                                  "/api/renders/..%2f..%2fconfig.json", "/static/../server.py",
                                  "/static/..%2f__init__.py", "/static/%2e%2e/checkpoint.py", "/api/sounds/..%2f1"])
def test_names_cannot_reach_outside_their_folder(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert 400 <= res.status_code < 500
    assert b"import" not in res.content


def test_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/").text
    assert "/static/app.js" in page and "http" not in page.replace("http-equiv", "")
    for asset in ("app.js", "style.css"):
        res = client.get(f"/static/{asset}")
        assert res.status_code == 200 and b"http://" not in res.content.replace(b"http://www.w3.org", b"")


def test_api_docs_need_no_network(client: TestClient) -> None:
    """Swagger UI's files come from this server (offline the CDN's page was blank) and it validates nowhere."""
    res = client.get("/api/docs")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = res.text
    assert not re.findall(r"(?:https?:)?//[\w.-]+", page)
    assert '"validatorUrl": null' in page and "'/api/openapi.json'" in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css", "png"}
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 0, asset
    bundle = client.get(next(a for a in assets if a.endswith(".js"))).text
    assert "SwaggerUIBundle" in bundle
    assert client.get("/api/openapi.json").json()["paths"]


def test_a_newer_request_supersedes_a_waiting_one() -> None:
    scheduler = LatestOnly(parallel=1)
    release, started = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow_job():
        started.set()
        release.wait(5)
        return "first"

    def attempt(name: str, seq: int, job) -> None:
        try:
            results[name] = scheduler.run("tab", seq, job)
        except Superseded:
            results[name] = "superseded"

    t1 = threading.Thread(target=attempt, args=("a", 1, slow_job))
    t1.start()
    started.wait(5)
    t2 = threading.Thread(target=attempt, args=("b", 2, lambda: "second"))
    t2.start()
    time.sleep(0.05)  # b waits for the slot...
    t3 = threading.Thread(target=attempt, args=("c", 3, lambda: "third"))
    t3.start()
    time.sleep(0.05)  # ...and c overtakes it
    release.set()
    for t in (t1, t2, t3):
        t.join(5)
    assert results == {"a": "first", "b": "superseded", "c": "third"}
    with pytest.raises(Superseded):
        scheduler.run("tab", 2, lambda: "late")
    assert scheduler.run("other-tab", 1, lambda: "independent") == "independent"


def test_overtaken_request_is_answered_409(client: TestClient) -> None:
    assert client.post("/api/sounds/0", json={"client": "tab1", "seq": 5}).status_code == 200
    res = client.post("/api/sounds/1", json={"client": "tab1", "seq": 4})
    assert res.status_code == 409 and "newer" in res.text
    assert client.post("/api/sounds/1", json={"client": "tab2", "seq": 4}).status_code == 200


def test_play_on_a_busy_port_is_a_one_line_error(tiny_run, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["play", str(tiny_run), "--port", str(port), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and err.count("\n") == 1


def test_play_warns_when_reachable_from_other_machines(tiny_run, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        cli.main(["play", str(tiny_run), "--host", "0.0.0.0", "--port", str(busy.getsockname()[1]), "--no-browser"])
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().out


def test_far_flung_notes_neither_shrink_the_map_nor_take_the_pad(instrument: Instrument) -> None:
    import copy

    inst = copy.copy(instrument)
    rng = np.random.default_rng(0)
    inst.map_points = np.vstack([rng.standard_normal((200, 2)), [[40.0, 40.0]]])
    x0, y0, x1, y1 = inst.map_view()
    assert -3.5 < x0 < -1.5 and 1.5 < x1 < 3.5 and -3.5 < y0 < -1.5 and 1.5 < y1 < 3.5
    corners = inst.default_corners()
    assert 200 not in corners and len(set(corners)) == 4
