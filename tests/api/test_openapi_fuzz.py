"""A property-based fuzz of the OpenAPI (schemathesis): generated requests to every /v2 operation
against the real app over HTTP (lifespan on) find no 5xx, and responses match the documented schemas."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis.checks import allow_header_conformance, negative_data_rejection, positive_data_acceptance
import uvicorn
from hypothesis import HealthCheck, settings

from api import create_app
from tests.api.conftest import AUTH, NoEngines, _free_port, api_settings

pytestmark = pytest.mark.unit

EXAMPLES_PER_OPERATION = 20


class _ThreadedServer:
    def __init__(self, app):
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "API server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    # Uploaded photos would land in the replicas folder: a copy, never the checkout's.
    replicas = shutil.copytree(Path(__file__).resolve().parents[2] / "replicas", folder / "replicas")
    settings_ = api_settings(folder / "data", cvi_replicas_dir=replicas)
    with _ThreadedServer(create_app(settings_, models=NoEngines(settings_))) as url:
        yield url


def _spec() -> dict:
    """The app's OpenAPI as it serves it (built without starting the app)."""
    import tempfile
    from pathlib import Path

    settings_ = api_settings(Path(tempfile.gettempdir()) / "cvi-openapi-unused")
    return create_app(settings_, models=NoEngines(settings_)).openapi()


# /v2/pals and /v2/faces are the same handlers as /v2/personas and /v2/replicas.
schema = schemathesis.openapi.from_dict(_spec()).include(path_regex="^/v2/(conversations|personas|replicas)")


def test_the_served_openapi_is_the_fuzzed_one(base_url):
    assert httpx.get(f"{base_url}/openapi.json").json() == _spec()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same requests on every run: a failure reproduces
    database=None,  # no .hypothesis folder in the checkout
)
def test_no_generated_request_gets_a_server_error(case, base_url):
    case.call_and_validate(
        base_url=base_url,
        headers=AUTH,
        excluded_checks=[
            # Starlette answers a method a path lacks with 405 listing only that route's methods in Allow.
            allow_header_conformance,
            # A well-formed id that names no persona or replica is rightly refused (422/404).
            positive_data_acceptance,
            # Pydantic's lax mode takes 0 for false and ignores unknown query parameters.
            negative_data_rejection,
        ],
    )


def test_the_fuzzed_server_still_answers(base_url):
    assert httpx.get(f"{base_url}/v2/replicas", headers=AUTH).status_code == 200
