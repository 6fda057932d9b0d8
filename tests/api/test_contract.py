"""The REST contract through the real app (lifespan on, real storage): every route and its errors."""

import hashlib
import hmac
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.storage import SERVER_GONE_REASON, Store
from api.webhooks import SIGNATURE_HEADER, webhook_secret
from tests.api.conftest import AUTH, KEY, OTHER_KEY, NoEngines

pytestmark = pytest.mark.unit

SDP_OFFER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def _create(client: TestClient, **body) -> dict:
    body.setdefault("persona_id", "ava")
    response = client.post("/v2/conversations", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def _wait(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# Auth and OpenAPI ------------------------------------------------------------


def test_every_v2_route_wants_a_known_key_as_json_401(client):
    paths = client.get("/openapi.json").json()["paths"]
    routes = [
        (method.upper(), path.replace("{conversation_id}", "c1").replace("{persona_id}", "p1").replace("{replica_id}", "r1"))
        for path, operations in paths.items()
        if path.startswith("/v2")
        for method in operations
    ]
    assert len(routes) == 13 + 8  # and the newer names: /v2/pals (5), /v2/faces (3)
    for method, path in routes:
        for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": ""}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert "x-api-key" in response.json()["error"]
    # Both configured keys are accepted.
    assert client.get("/v2/replicas", headers={"x-api-key": OTHER_KEY}).status_code == 200


def test_without_configured_keys_one_is_made_kept_and_printed_once(tmp_path, make_settings, capsys):
    settings = make_settings(cvi_data_dir=tmp_path, cvi_api_keys=None)
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        printed = capsys.readouterr().out
        key = (tmp_path / "api_key").read_text().strip()
        assert key and key in printed
        assert (tmp_path / "api_key").stat().st_mode & 0o077 == 0
        assert c.get("/v2/replicas", headers={"x-api-key": key}).status_code == 200
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        assert key not in capsys.readouterr().out
        assert c.get("/v2/replicas", headers={"x-api-key": key}).status_code == 200
        assert c.get("/v2/replicas", headers={"x-api-key": KEY}).status_code == 401


def test_openapi_documents_every_route_its_key_and_errors(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/v2/conversations", "/v2/conversations/{conversation_id}", "/v2/conversations/{conversation_id}/end",
        "/v2/personas", "/v2/personas/{persona_id}", "/v2/replicas", "/v2/replicas/{replica_id}",
    }
    assert set(paths["/v2/conversations"]) == {"get", "post"}
    assert set(paths["/v2/conversations/{conversation_id}"]) == {"get", "delete"}
    assert set(paths["/v2/personas/{persona_id}"]) == {"get", "patch", "delete"}
    schemes = spec["components"]["securitySchemes"]
    assert any(s == {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "Your API key"} for s in schemes.values())
    for path, operations in paths.items():
        if path.startswith("/v2"):
            for op in operations.values():
                assert "401" in op["responses"], path
                assert op.get("security"), path
    create = spec["components"]["schemas"]["ConversationCreate"]["properties"]
    assert {"replica_id", "persona_id", "conversation_name", "conversational_context", "custom_greeting",
            "callback_url", "audio_only", "require_auth", "test_mode", "properties"} == set(create)
    assert "404" in paths["/v2/conversations/{conversation_id}"]["get"]["responses"]


# Conversations ----------------------------------------------------------------


def test_a_created_conversation_has_a_page_bound_to_it_and_ends_on_request(client):
    created = _create(client, conversation_name="demo", custom_greeting="Hello there", conversational_context="A test")
    cid = created["conversation_id"]
    assert created["status"] == "active"
    assert created["conversation_url"] == f"http://testserver/conversations/{cid}/"
    assert created["meeting_token"] is None
    assert (created["persona_id"], created["replica_id"]) == ("ava", "eileen")
    page = client.get(f"/conversations/{cid}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get(f"/conversations/{cid}", follow_redirects=False).headers["location"] == f"/conversations/{cid}/"
    # The page's leave beacon reaches this conversation's room (text/plain, as sendBeacon posts it).
    leave = client.post(f"/conversations/{cid}/api/leave", content='{"pc_id": "nobody"}', headers={"content-type": "text/plain"})
    assert leave.status_code == 404 and "'nobody' not found" in leave.json()["error"]
    assert client.post(f"/conversations/{cid}/api/leave", content="{}").status_code == 422

    got = client.get(f"/v2/conversations/{cid}", headers=AUTH).json()
    assert got["custom_greeting"] == "Hello there" and got["conversation_name"] == "demo"
    assert "transcript" not in got

    ended = client.post(f"/v2/conversations/{cid}/end", headers=AUTH)
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    verbose = client.get(f"/v2/conversations/{cid}", params={"verbose": "true"}, headers=AUTH).json()
    assert verbose["shutdown_reason"] == "end_conversation_endpoint_hit"
    assert verbose["transcript"] == []
    assert [e["event_type"] for e in verbose["events"]] == [
        "system.replica_joined", "system.shutdown", "application.transcription_ready",
    ]
    assert verbose["events"][1]["properties"] == {"shutdown_reason": "end_conversation_endpoint_hit"}
    # The room is gone; ending again changes nothing.
    assert client.get(f"/conversations/{cid}/").status_code == 404
    again = client.post(f"/v2/conversations/{cid}/end", headers=AUTH).json()
    assert again["status"] == "ended"
    assert len(client.get(f"/v2/conversations/{cid}?verbose=true", headers=AUTH).json()["events"]) == 3


def test_test_mode_makes_the_record_only(client):
    created = _create(client, test_mode=True)
    assert created["status"] == "ended" and created["conversation_url"] is None
    verbose = client.get(f"/v2/conversations/{created['conversation_id']}?verbose=true", headers=AUTH).json()
    assert verbose["shutdown_reason"].startswith("test_mode")
    assert verbose["events"] == []


def test_list_filters_by_status_and_pages_from_one(client):
    ended = [_create(client, test_mode=True)["conversation_id"] for _ in range(3)]
    active = [_create(client)["conversation_id"] for _ in range(2)]
    everything = client.get("/v2/conversations", headers=AUTH).json()
    assert everything["total_count"] == 5 and len(everything["data"]) == 5
    only_active = client.get("/v2/conversations?status=active", headers=AUTH).json()
    assert only_active["total_count"] == 2
    assert {c["conversation_id"] for c in only_active["data"]} == set(active)
    pages = [client.get(f"/v2/conversations?limit=2&page={p}", headers=AUTH).json() for p in (1, 2, 3, 4)]
    assert [len(p["data"]) for p in pages] == [2, 2, 1, 0]
    assert all(p["total_count"] == 5 for p in pages)
    seen = [c["conversation_id"] for p in pages for c in p["data"]]
    assert sorted(seen) == sorted(ended + active)
    for bad, field in (("status=open", "status"), ("limit=0", "limit"), ("page=0", "page"), ("limit=101", "limit")):
        response = client.get(f"/v2/conversations?{bad}", headers=AUTH)
        assert response.status_code == 422 and response.json()["error"].startswith(field), bad


def test_unknown_ids_are_404s_naming_the_id(client):
    for method, path in (
        ("GET", "/v2/conversations/cnope"), ("POST", "/v2/conversations/cnope/end"),
        ("DELETE", "/v2/conversations/cnope"), ("GET", "/v2/personas/pnope"), ("PATCH", "/v2/personas/pnope"),
        ("DELETE", "/v2/personas/pnope"), ("GET", "/v2/replicas/rnope"),
    ):
        body = [{"op": "replace", "path": "/context", "value": "x"}] if method == "PATCH" else None
        response = client.request(method, path, headers=AUTH, json=body)
        assert response.status_code == 404, (method, path)
        assert path.split("/")[3].split("?")[0] in response.json()["error"]
    assert "available: ada, eileen, leo" in client.get("/v2/replicas/rnope", headers=AUTH).json()["error"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"persona_id": "nobody"}, "persona_id: persona 'nobody' not found; available: ava"),
        ({"persona_id": "ava", "replica_id": "ghost"}, "replica_id: replica 'ghost' not found; available: ada, eileen, leo"),
        ({"persona_id": "ava", "language": "fr"}, "unknown field(s) language"),
        ({"persona_id": "ava", "properties": {"enable_transcription": True}}, "properties: unknown field(s) enable_transcription"),
        ({"persona_id": "ava", "properties": {"language": "klingon"}},
         "properties.language: language 'klingon' is not supported; allowed: english (en), french (fr), "),
        ({"persona_id": "ava", "properties": {"language": "multilingual"}}, "automatic detection is not supported"),
        ({"persona_id": "ava", "properties": {"language": "tagalog"}},
         "properties.language: language 'tagalog' has no offline voice (tts_engine 'piper'); with it allowed: english (en)"),
        ({"persona_id": "ava", "callback_url": "ftp://x"}, "callback_url: String should match pattern '^https?://[^/\\s]+'; got 'ftp://x'"),
        ({"persona_id": "ava", "properties": {"max_call_duration": 0}}, "properties.max_call_duration: Input should be greater than or equal to 1; got 0"),
        ({"persona_id": "nova"}, "OPENAI_API_KEY is required by persona 'nova'"),
    ],
)
def test_bad_conversation_requests_are_422s_naming_field_value_and_what_is_allowed(client, body, expected):
    response = client.post("/v2/conversations", json=body, headers=AUTH)
    assert response.status_code == 422
    assert expected in response.json()["error"]
    assert client.get("/v2/conversations", headers=AUTH).json()["total_count"] == 0


def test_language_by_name_or_code_sets_the_call_s_ears_voice_and_answers(client):
    created = _create(client, properties={"language": "French"})
    assert created["properties"]["language"] == "french"
    persona = client.app.state.live.get(created["conversation_id"]).persona
    assert persona.layers.stt.language == "fr"
    assert (persona.layers.tts.tts_engine, persona.layers.tts.external_voice_id) == ("espeak", "fr-fr")
    by_code = _create(client, properties={"language": "de"})
    assert by_code["properties"]["language"] == "german"
    english = _create(client, properties={"language": "english"})
    assert client.app.state.live.get(english["conversation_id"]).persona.layers.tts.tts_engine == "piper"
    assert _create(client)["properties"]["language"] is None  # the persona's own


def test_delete_ends_a_running_conversation_and_removes_it(client):
    cid = _create(client)["conversation_id"]
    assert client.delete(f"/v2/conversations/{cid}", headers=AUTH).status_code == 204
    assert client.get(f"/v2/conversations/{cid}", headers=AUTH).status_code == 404
    assert client.get(f"/conversations/{cid}/").status_code == 404


def test_require_auth_issues_a_meeting_token_the_page_must_present(client):
    created = _create(client, require_auth=True)
    cid, token = created["conversation_id"], created["meeting_token"]
    assert token and len(token) >= 24
    assert "meeting_token" not in client.get(f"/v2/conversations/{cid}", headers=AUTH).json()
    assert client.get(f"/conversations/{cid}/").status_code == 401
    assert client.get(f"/conversations/{cid}/?t=wrong").status_code == 401
    offer = {"sdp": SDP_OFFER, "type": "offer"}
    assert client.post(f"/conversations/{cid}/api/offer", json=offer).status_code == 401
    assert client.post(f"/conversations/{cid}/api/offer", json=offer, headers={"x-meeting-token": "no"}).status_code == 401
    # The token in the page's URL is kept in a cookie for that conversation; the offer is then let through
    # (and refused only as an SDP: it carries no usable media description).
    assert client.get(f"/conversations/{cid}/?t={token}").status_code == 200
    assert client.post(f"/conversations/{cid}/api/offer", json=offer).status_code == 400
    client.cookies.clear()
    assert client.post(f"/conversations/{cid}/api/offer", json=offer, headers={"x-meeting-token": token}).status_code == 400
    # Another conversation without require_auth needs no token.
    other = _create(client)["conversation_id"]
    assert client.get(f"/conversations/{other}/").status_code == 200


# Timeouts (no peer ever joins) --------------------------------------------------


def test_participant_absent_timeout_and_max_call_duration_end_the_call_with_the_contract_reason(client, receiver):
    absent = _create(client, callback_url=receiver.url, properties={"participant_absent_timeout": 1, "max_call_duration": 30})
    longest = _create(client, callback_url=receiver.url, properties={"participant_absent_timeout": 30, "max_call_duration": 1})

    def reason(cid):
        return client.get(f"/v2/conversations/{cid}?verbose=true", headers=AUTH).json()["shutdown_reason"]

    _wait(lambda: reason(absent["conversation_id"]) and reason(longest["conversation_id"]), timeout_s=15)
    assert reason(absent["conversation_id"]) == "participant_absent_timeout reached"
    assert reason(longest["conversation_id"]) == "max_call_duration reached"
    for cid, expected in ((absent["conversation_id"], "participant_absent_timeout reached"),
                          (longest["conversation_id"], "max_call_duration reached")):
        _wait(lambda cid=cid: "application.transcription_ready" in receiver.events(cid), timeout_s=15)
        shutdown = [e for e, _, _ in receiver.received if e["conversation_id"] == cid and e["event_type"] == "system.shutdown"]
        assert shutdown[0]["properties"]["shutdown_reason"] == expected


# Webhooks -----------------------------------------------------------------------


def test_webhooks_are_signed_and_a_receiver_that_fails_twice_gets_the_third_try(client, receiver):
    created = _create(client, callback_url=receiver.url)
    cid = created["conversation_id"]
    client.post(f"/v2/conversations/{cid}/end", headers=AUTH)
    _wait(lambda: len(receiver.events(cid)) == 3)
    assert receiver.events(cid) == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
    for event_type in receiver.events(cid):
        assert receiver.attempts[f"{cid}/{event_type}"] == 3
    secret = webhook_secret(KEY)
    for event, body, headers in receiver.received:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
        assert not hmac.compare_digest(
            headers[SIGNATURE_HEADER], "sha256=" + hmac.new(webhook_secret(OTHER_KEY), body, hashlib.sha256).hexdigest()
        )
        assert set(event) == {"conversation_id", "event_type", "message_type", "timestamp", "properties"}
    shutdown = next(e for e, _, _ in receiver.received if e["event_type"] == "system.shutdown")
    assert shutdown["message_type"] == "system"
    assert shutdown["properties"] == {"shutdown_reason": "end_conversation_endpoint_hit"}
    ready = next(e for e, _, _ in receiver.received if e["event_type"] == "application.transcription_ready")
    assert ready["message_type"] == "application" and ready["properties"] == {"transcript": []}


def test_a_dead_receiver_never_delays_the_api(client):
    start = time.monotonic()
    created = _create(client, callback_url="http://127.0.0.1:9/unreachable")
    client.post(f"/v2/conversations/{created['conversation_id']}/end", headers=AUTH)
    assert time.monotonic() - start < 2.0


# Personas and replicas ----------------------------------------------------------


def test_a_personas_keys_are_stored_for_its_engines_and_never_shown(client):
    from api.catalog import storable, stored_persona
    from personas.model import Persona

    layers = {"llm": {"engine": "openai", "api_key": "sk-llm-secret"},
              "perception": {"perception_model": "openai", "api_key": "sk-vision-secret"}}
    body = {"persona_name": "Seer", "system_prompt": "You see.", "default_replica_id": "leo", "layers": layers}
    created = client.post("/v2/personas", json=body, headers=AUTH)
    assert created.status_code == 200, created.text
    assert "sk-llm-secret" not in created.text and "sk-vision-secret" not in created.text
    assert created.json()["layers"]["perception"]["perception_model"] == "openai"
    stored = storable(Persona.model_validate(body))
    assert stored["layers"]["llm"]["api_key"] == "sk-llm-secret"
    assert stored["layers"]["perception"]["api_key"] == "sk-vision-secret"
    assert stored_persona(stored).layers.perception.api_key.get_secret_value() == "sk-vision-secret"


def test_personas_made_patched_and_deleted_beside_the_read_only_modules(client):
    body = {
        "persona_name": "Tutor",
        "system_prompt": "You teach.",
        "default_replica_id": "leo",
        "layers": {"llm": {"engine": "openai", "model": "gpt-4o-mini", "api_key": "sk-secret-value", "temperature": 0.5}},
    }
    created = client.post("/v2/personas", json=body, headers=AUTH)
    assert created.status_code == 200, created.text
    persona = created.json()
    pid = persona["persona_id"]
    assert persona["read_only"] is False and persona["layers"]["llm"]["model"] == "gpt-4o-mini"
    assert "sk-secret-value" not in created.text

    listed = client.get("/v2/personas?limit=100", headers=AUTH).json()
    ids = [p["persona_id"] for p in listed["data"]]
    assert {"ava", "max", pid} <= set(ids) and listed["total_count"] == len(ids)
    assert all(p["read_only"] for p in listed["data"] if p["persona_id"] != pid)
    assert client.get("/v2/personas/ava", headers=AUTH).json()["persona_name"]

    patch = [
        {"op": "replace", "path": "/layers/llm/temperature", "value": 0.2},
        {"op": "add", "path": "/context", "value": "Algebra."},
        {"op": "test", "path": "/persona_name", "value": "Tutor"},
    ]
    patched = client.patch(f"/v2/personas/{pid}", json=patch, headers=AUTH)
    assert patched.status_code == 200, patched.text
    assert patched.json()["layers"]["llm"]["temperature"] == 0.2 and patched.json()["context"] == "Algebra."
    assert "sk-secret-value" not in patched.text
    assert client.get(f"/v2/personas/{pid}", headers=AUTH).json()["context"] == "Algebra."

    bad_value = client.patch(f"/v2/personas/{pid}", json=[{"op": "replace", "path": "/layers/llm/temperature", "value": 5}], headers=AUTH)
    assert bad_value.status_code == 422
    assert "layers.llm.temperature" in bad_value.json()["error"] and "got 5" in bad_value.json()["error"]
    bad_path = client.patch(f"/v2/personas/{pid}", json=[{"op": "remove", "path": "/nothing/here"}], headers=AUTH)
    assert bad_path.status_code == 422 and "operation 0 (remove /nothing/here)" in bad_path.json()["error"]
    bad_op = client.patch(f"/v2/personas/{pid}", json=[{"op": "merge", "path": "/context"}], headers=AUTH)
    assert bad_op.status_code == 422 and "op" in bad_op.json()["error"]
    failed_test = client.patch(f"/v2/personas/{pid}", json=[{"op": "test", "path": "/persona_name", "value": "X"}], headers=AUTH)
    assert failed_test.status_code == 409
    assert client.get(f"/v2/personas/{pid}", headers=AUTH).json()["layers"]["llm"]["temperature"] == 0.2

    for method in ("PATCH", "DELETE"):
        response = client.request(method, "/v2/personas/ava", headers=AUTH, json=patch if method == "PATCH" else None)
        assert response.status_code == 403 and "personas/ava.py" in response.json()["error"]

    conversation = _create(client, persona_id=pid, test_mode=True)
    assert conversation["persona_id"] == pid and conversation["replica_id"] == "leo"

    assert client.delete(f"/v2/personas/{pid}", headers=AUTH).status_code == 204
    assert client.get(f"/v2/personas/{pid}", headers=AUTH).status_code == 404


def test_persona_create_refuses_unknown_fields_and_engines_by_name(client):
    response = client.post("/v2/personas", json={"persona_name": "x", "system_prompt": "y", "mood": "happy"}, headers=AUTH)
    assert response.status_code == 422 and "unknown field(s) mood" in response.json()["error"]
    response = client.post(
        "/v2/personas", json={"persona_name": "x", "system_prompt": "y", "layers": {"tts": {"tts_engine": "acme"}}}, headers=AUTH
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert "layers.tts.tts_engine" in error and "'acme'" in error and "piper" in error


def test_the_newer_names_pal_and_face_are_aliases(client):
    made = client.post(
        "/v2/pals", json={"pal_name": "Guide", "system_prompt": "Guide people.", "default_face_id": "ada"}, headers=AUTH
    )
    assert made.status_code == 200, made.text
    pid = made.json()["persona_id"]
    assert made.json()["persona_name"] == "Guide" and made.json()["default_replica_id"] == "ada"
    assert client.get(f"/v2/personas/{pid}", headers=AUTH).json()["persona_name"] == "Guide"
    assert client.get(f"/v2/pals/{pid}", headers=AUTH).status_code == 200
    assert client.get("/v2/faces/leo", headers=AUTH).json()["replica_id"] == "leo"
    assert client.get("/v2/faces", headers=AUTH).json()["total_count"] == 3
    conversation = _create(client, persona_id=None, pal_id=pid, face_id="leo", test_mode=True)
    assert (conversation["persona_id"], conversation["replica_id"]) == (pid, "leo")
    clash = client.post("/v2/conversations", json={"pal_id": "ava", "persona_id": "max"}, headers=AUTH)
    assert clash.status_code == 422 and "pal_id and persona_id name the same field" in clash.json()["error"]
    assert client.delete(f"/v2/pals/{pid}", headers=AUTH).status_code == 204


def test_a_replica_made_from_an_uploaded_photo(make_settings, tmp_path):
    import cv2
    import numpy as np
    from skimage import data as images

    replicas = shutil.copytree(Path(__file__).resolve().parents[2] / "replicas", tmp_path / "replicas")
    settings = make_settings(cvi_replicas_dir=replicas)
    face = cv2.imencode(".png", cv2.cvtColor(images.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
    blank = cv2.imencode(".png", np.full((400, 400, 3), 128, np.uint8))[1].tobytes()
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        made = c.post("/v2/replicas", data={"replica_name": "Astro Test"}, files={"image": ("astro.png", face, "image/png")}, headers=AUTH)
        assert made.status_code == 200, made.text
        assert made.json() == {
            "replica_id": "astro-test", "replica_name": "Astro Test", "status": "completed",
            "default_voice": "en_US-joe-medium", "replica_type": "user",
        }
        assert (replicas / "astro-test" / "portrait.jpg").is_file()
        assert (replicas / "astro-test" / "mesh.json").is_file()  # the face mesh the renderer warps
        assert "astro-test" in [r["replica_id"] for r in c.get("/v2/replicas?limit=100", headers=AUTH).json()["data"]]
        assert _create(c, replica_id="astro-test", test_mode=True)["replica_id"] == "astro-test"
        again = c.post("/v2/replicas", data={"replica_name": "Astro Test"}, files={"image": ("a.png", face, "image/png")}, headers=AUTH)
        assert again.status_code == 422 and again.json()["error"] == "image: replica 'astro-test' already exists"
        no_face = c.post("/v2/replicas", data={"replica_name": "Nobody"}, files={"image": ("b.png", blank, "image/png")}, headers=AUTH)
        assert no_face.status_code == 422 and "face" in no_face.json()["error"]
        not_image = c.post("/v2/replicas", data={"replica_name": "Text"}, files={"image": ("c.txt", b"hello", "text/plain")}, headers=AUTH)
        assert not_image.status_code == 422
        assert not_image.json()["error"] == "image: 'c.txt': not an image OpenCV can read (use a PNG or JPEG photo)"
        missing = c.post("/v2/replicas", data={"replica_name": "X"}, headers=AUTH)
        assert missing.status_code == 422 and missing.json()["error"].startswith("image: field required")
    assert not (Path(__file__).resolve().parents[2] / "replicas" / "astro-test").exists()


def test_replicas_list_the_stock_ones(client):
    listed = client.get("/v2/replicas", headers=AUTH).json()
    assert listed["total_count"] == 3
    assert [r["replica_id"] for r in listed["data"]] == ["ada", "eileen", "leo"]
    assert client.get("/v2/replicas/eileen", headers=AUTH).json()["replica_name"] == "Eileen"
    assert client.get("/v2/replicas?limit=1&page=2", headers=AUTH).json()["data"][0]["replica_id"] == "eileen"


# Restarts ------------------------------------------------------------------------


def test_records_survive_a_restart_and_a_dead_servers_calls_are_ended(make_settings):
    settings = make_settings()
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        pid = c.post("/v2/personas", json={"persona_name": "Kept", "system_prompt": "Stay."}, headers=AUTH).json()["persona_id"]
        kept = _create(c, test_mode=True, conversation_name="kept")["conversation_id"]
        running = _create(c)["conversation_id"]
    # A clean stop ends what the server hosted.
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        assert c.get(f"/v2/personas/{pid}", headers=AUTH).json()["persona_name"] == "Kept"
        assert c.get(f"/v2/conversations/{kept}", headers=AUTH).json()["conversation_name"] == "kept"
        stopped = c.get(f"/v2/conversations/{running}?verbose=true", headers=AUTH).json()
        assert stopped["status"] == "ended" and stopped["shutdown_reason"].startswith("server_shutdown")
        assert [e["event_type"] for e in stopped["events"]][-2:] == ["system.shutdown", "application.transcription_ready"]

    # A server that died: its conversation is still active in the store, and its heartbeat is gone.
    async def leave_an_orphan():
        store = Store(settings.database_url)
        await store.create_tables()
        await store.add_conversation(
            conversation_id="corphan", status="active", persona_id="ava", server_id="sdead", properties={}
        )
        await store.close()

    import asyncio

    asyncio.run(leave_an_orphan())
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        orphan = c.get("/v2/conversations/corphan?verbose=true", headers=AUTH).json()
        assert orphan["status"] == "ended" and orphan["shutdown_reason"] == SERVER_GONE_REASON
        assert [e["event_type"] for e in orphan["events"]] == ["system.shutdown"]
