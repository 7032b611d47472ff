"""Schema fuzzing: schemathesis reads the running server's own OpenAPI document and sends it
generated requests (valid and invalid parameters, random uploads); no answer may be a 5xx, and
every answer must match the document (status, media type, JSON schema)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from braintumor.serve import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def live_url(tiny_predictor):
    """The app served by uvicorn on a free loopback port, in a thread of this process."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_predictor, workers=2, queue=8), log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def api_schema(live_url):
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


OPERATIONS = [("GET", "/healthz"), ("GET", "/v1/model"), ("POST", "/v1/predict"), ("POST", "/v1/explain")]


def test_every_operation_is_fuzzed(api_schema):
    found = {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Invalid requests too where there is something to get wrong (parameterless GETs have nothing)
CASES = [(method, path, mode) for method, path in OPERATIONS
         for mode in ([GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if method == "POST" else [GenerationMode.POSITIVE])]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_no_server_error_and_answers_match_the_schema(api_schema, live_url, method, path, mode):
    operation = api_schema[path][method]
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case):
        response = case.call(base_url=live_url)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        # a generated upload is random bytes: a 415 for it is right, not a refused valid request
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()
    assert statuses, "no request was sent"
