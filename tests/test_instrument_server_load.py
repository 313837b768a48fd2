"""The instrument's server under hostile and heavy use: fuzzed from its own OpenAPI description, and
50 concurrent clients for 30 seconds (docs/reliability.md)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable

from samplegen.app.instrument import Instrument
from samplegen.app.server import create_app, running
from samplegen.checkpoint import load_run


@pytest.fixture(scope="module")
def app(tiny_run):
    # Schemathesis's ASGI client names its host "testserver"; the Host check itself is tested in test_instrument.py.
    return create_app(Instrument(load_run(tiny_run)), hosts=("testserver",))


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/api/openapi.json", app)


def test_fuzzed_requests_never_get_a_server_error(api_schema) -> None:
    """Every operation of the OpenAPI description, with bodies and paths generated from it (valid and not)."""
    from hypothesis import given
    from schemathesis import GenerationMode

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    seen: dict[int, int] = {}
    for operation, mode in itertools.product(operations, GenerationMode):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])
            if response.status_code >= 400:
                assert response.json()["detail"], "every refusal says what is wrong"

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (GET /api/info takes no input)
            assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
    print(f"\nfuzzed {sum(seen.values())} requests over {len(operations)} operations; status codes {sorted(seen.items())}")
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0 and sum(seen.values()) >= 7 * 20


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_fifty_clients_for_thirty_seconds(app) -> None:
    clients, seconds = 50, 30.0
    counts = {"ok": 0, "errors": 0}
    failures: list[str] = []
    lock = threading.Lock()
    memory: list[tuple[float, float]] = []

    def client(base: str, i: int, stop: float) -> None:
        rng = np.random.default_rng(i)
        seq = 0
        while time.monotonic() < stop:
            seq += 1
            body = {"corners": [0, 1, 2, 3], "x": float(rng.random()), "y": float(rng.random()), "client": f"c{i}",
                    "seq": seq}
            req = urllib.request.Request(base + "/api/blend", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as res:
                    note = json.loads(res.read())
                with urllib.request.urlopen(base + note["wav"], timeout=60) as res:
                    ok = res.status == 200 and len(res.read()) > 1000
            except (urllib.error.URLError, OSError, ValueError) as exc:
                ok = False
                with lock:
                    failures.append(repr(exc)[:200])
            with lock:
                counts["ok" if ok else "errors"] += 1

    with running(app) as base:
        start = time.monotonic()
        stop = start + seconds
        threads = [threading.Thread(target=client, args=(base, i, stop)) for i in range(clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            memory.append((time.monotonic() - start, rss_mb()))
            time.sleep(1.0)
        for t in threads:
            t.join()
    settled = [m for t, m in memory if t >= 10.0]  # after the render cache has filled
    growth = max(settled) - settled[0]
    print(f"\n{clients} clients x {seconds:.0f} s: {counts['ok']} notes, {counts['errors']} errors; "
          f"RSS {memory[0][1]:.0f} MB at start, {settled[0]:.0f} MB at 10 s, {max(settled):.0f} MB peak after")
    assert counts["errors"] == 0, failures[:5]
    assert counts["ok"] >= clients
    assert growth < 40, f"memory grew {growth:.0f} MB after the first 10 s"
