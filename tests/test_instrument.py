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

from samplegen.app import cli
from samplegen.app.instrument import (DESCRIPTORS, KNOB_RANGE, Instrument, describe, descriptor_rotation, neighbour_map,
                                      neighbour_recall, principal_axes)
from samplegen.app.server import MAX_BODY_BYTES, LatestOnly, Superseded, create_app
from samplegen.audio.audio_io import estimate_pitch_hz
from samplegen.audio.corpus import cents_from_c
from samplegen.checkpoint import load_run
from samplegen.generation.generate import load_latent
from samplegen.spectral.stft import StftConfig


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
    assert describe(bright, cfg)["air"][0] == pytest.approx(0.0) and describe(dull, cfg)["air"][0] < -100
    low = torch.zeros(1, 33, 20)
    low[0, 0] = 1.0
    assert describe(low, cfg)["body"][0] == pytest.approx(0.0) and describe(dull, cfg)["body"][0] < -100

    wide = StftConfig(n_fft=512, hop_length=256)  # 60 ms of onset = 10 frames
    steady = torch.ones(1, 257, 40)
    steady[0, 24:] = 0.01  # little above 2 kHz (bin 24 is 2,067 Hz)
    trembling = steady * torch.tensor([1.0, 0.5] * 20)
    biting = steady.clone()
    biting[0, 24:, :5] *= 10  # more of it in the first frames
    assert describe(steady, wide)["wobble"][0] == 0 < describe(trembling, wide)["wobble"][0]
    assert abs(describe(steady, wide)["bite"][0]) < 1e-9 and describe(biting, wide)["bite"][0] > 3


def test_knobs_set_the_projection_they_show(instrument: Instrument) -> None:
    z = instrument.corpus_point(0)
    wanted = np.linspace(-1, 1, len(instrument.knobs))
    moved = instrument.turn_knobs(z, wanted)
    assert np.allclose(instrument.knob_positions(moved), wanted, atol=1e-6)
    assert 1 <= len(instrument.knobs) <= 8 and all(k.label for k in instrument.knobs)
    labels = [k.label for k in instrument.knobs]
    assert len(set(labels)) == len(labels), labels


def test_knob_directions_aim_at_the_descriptors_they_predict() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((400, 5))
    truth = np.array([0.0, 0.6, 0.8, 0.0, 0.0])  # "brightness" grows along a mix of two coordinates
    values = {"brightness": scores @ truth + 0.1 * rng.standard_normal(400), "attack": rng.standard_normal(400)}
    rotation, aims = descriptor_rotation(scores, values, 4)
    assert aims[0] == "brightness" and aims[1:] == [None, None, None]  # random "attack" is not predicted
    assert abs(rotation[0] @ truth) > 0.99
    assert np.allclose(rotation @ rotation.T, np.eye(4), atol=1e-9)


def test_knob_labels_say_what_turning_them_up_does_to_the_rendered_sound(instrument: Instrument) -> None:
    """Each named knob, turned from -1 to +1 around corpus sounds, changes its descriptor the way its label
    says, measured on the rendered notes (phase retrieval and all), not on the decoder's magnitudes."""
    named = [k for k in instrument.knobs if not k.label.startswith("Timbre")]
    assert named and len(instrument.knobs) - len(named) <= 2
    titles = {title: more for title, more in DESCRIPTORS.values()}
    for knob in named:
        assert knob.hint == f"turn up: {titles[knob.label]}" and knob.effect > 0
        change = instrument.heard_change(knob, range(0, len(instrument.mu), 4))
        assert np.mean(change) > 0, (knob, change)


def test_the_map_keeps_each_sounds_preset_beside_it() -> None:
    """24 presets of 8 velocities in 16-D, velocity the largest spread: on the first two principal axes a
    sound's 7 nearest neighbours are almost never its own preset's; on the map, most of them are."""
    rng = np.random.default_rng(0)
    velocity = rng.standard_normal(16)
    velocity /= np.linalg.norm(velocity)
    points = np.concatenate([rng.standard_normal(16) + np.outer(np.linspace(-3, 3, 8), velocity)
                             + 0.1 * rng.standard_normal((8, 16)) for _ in range(24)])
    presets = np.repeat(np.arange(24), 8)
    centred = points - points.mean(axis=0)
    pca = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    assert neighbour_recall(pca, presets) < 0.2
    assert neighbour_recall(neighbour_map(points), presets) >= 0.8
    assert neighbour_recall(points, presets) >= 0.7


def test_new_points_land_among_their_nearest_corpus_sounds(instrument: Instrument) -> None:
    assert instrument.place(instrument.corpus_point(3)) == pytest.approx(tuple(instrument.map_points[3]))
    blend = instrument.blend([0, 0, 5, 5], 0.0, 0.01)  # 99 % sound 0
    assert np.linalg.norm(np.subtract(instrument.place(blend), instrument.map_points[0])) < \
        np.linalg.norm(np.subtract(instrument.place(blend), instrument.map_points[5]))
    assert instrument.edge_fraction() == 0.0


def test_a_draft_is_a_playable_note_rendered_with_fewer_iterations(instrument: Instrument) -> None:
    z = instrument.corpus_point(1)
    full, draft = instrument.render(z), instrument.render(z, draft=True)
    assert draft.draft and not full.draft
    a, _ = sf.read(io.BytesIO(full.wav))
    b, _ = sf.read(io.BytesIO(draft.wav))
    assert len(a) == len(b) == instrument.n_samples and np.max(np.abs(b)) > 0.5
    assert not np.allclose(a, b, atol=1e-3)  # the iterations the draft skips do change the waveform


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
    assert hz is not None and note.root == pytest.approx(60 + cents_from_c(hz) / 100, abs=0.01)


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


def test_a_rendered_note_is_saved_with_its_latent_point(client: TestClient, instrument: Instrument,
                                                       tmp_path) -> None:
    note = client.post("/api/render", json={"z": instrument.corpus_point(4).tolist(), "name": "my pad"}).json()
    assert note["source"] == "my pad" and note["quality"] == "full"
    res = client.get(note["latent"])
    assert res.status_code == 200 and 'filename="samplegen-my_pad.latent.json"' in res.headers["content-disposition"]
    assert 'filename="samplegen-my_pad.wav"' in client.get(note["wav"]).headers["content-disposition"]
    path = tmp_path / "saved.latent.json"
    path.write_bytes(res.content)
    assert np.allclose(load_latent(path, instrument.latent_dim).numpy(), note["z"])
    draft = client.post("/api/render", json={"z": note["z"], "quality": "draft"}).json()
    assert draft["quality"] == "draft"
    assert client.post("/api/render", json={"z": note["z"], "quality": "rough"}).status_code == 422


def test_a_dropped_corpus_file_lands_on_its_own_place(client: TestClient, instrument: Instrument,
                                                      tiny_samples_dir) -> None:
    """The page's dropped file is prepared and encoded as the corpus was: a corpus note lands on its own point."""
    names = list(instrument.run.corpus.names)
    wav = sorted(tiny_samples_dir.glob("*.wav"))[5]
    res = client.post(f"/api/encode?name={wav.name}", content=wav.read_bytes(),
                      headers={"Content-Type": "application/octet-stream"})
    assert res.status_code == 200, res.text
    note = res.json()
    i = next(k for k, n in enumerate(names) if n.endswith(wav.stem))
    assert note["source"] == wav.stem
    assert np.allclose(note["z"], instrument.mu[i], atol=1e-4)
    assert np.allclose(note["map"], instrument.map_points[i], atol=1e-3)


@pytest.mark.parametrize("name, body, code, words", [
    ("notes.txt", b"hello", 422, "drop a"),
    ("broken.wav", b"RIFF not really a wave", 422, "broken.wav: not a readable audio file"),
    ("empty.flac", b"", 422, "empty.flac: not a readable audio file"),
])
def test_a_bad_dropped_file_gets_a_one_line_reason(client: TestClient, name: str, body: bytes, code: int,
                                                   words: str) -> None:
    res = client.post(f"/api/encode?name={name}", content=body, headers={"Content-Type": "application/octet-stream"})
    assert res.status_code == code and words in res.json()["detail"], res.text
    assert "\n" not in res.json()["detail"]


def test_a_dropped_file_may_be_large_but_not_unbounded(client: TestClient) -> None:
    from samplegen.app.server import MAX_UPLOAD_BYTES

    res = client.post("/api/encode?name=big.wav", content=b"0" * (MAX_UPLOAD_BYTES + 1),
                      headers={"Content-Type": "application/octet-stream"})
    assert res.status_code == 413
    res = client.post("/api/encode?name=big.wav", content=b"0" * (MAX_BODY_BYTES * 4),
                      headers={"Content-Type": "application/octet-stream"})
    assert res.status_code == 422  # over the gestures' limit, within the upload's: read, then refused as not audio


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
