"""``POST /v2/replicas`` with a video: the hosted products' training flow over our API."""

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from tests.api.conftest import AUTH, NoEngines, api_settings
from tests.replica.talking_video import portrait_frames, write_video

pytestmark = pytest.mark.unit


def test_a_replica_made_from_an_uploaded_video(tmp_path):
    replicas = shutil.copytree(Path(__file__).resolve().parents[2] / "replicas", tmp_path / "replicas")
    settings = api_settings(tmp_path / "data", cvi_replicas_dir=replicas)
    talking = write_video(tmp_path / "talking.mp4", portrait_frames(10.5, 12), 12).read_bytes()
    short = write_video(tmp_path / "short.mp4", portrait_frames(4, 10), 10).read_bytes()
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
        made = c.post(
            "/v2/replicas", data={"replica_name": "Eileen Talking"},
            files={"video": ("me.mp4", talking, "video/mp4")}, headers=AUTH,
        )
        assert made.status_code == 200, made.text
        assert made.json()["replica_id"] == "eileen-talking" and made.json()["replica_type"] == "user"
        assert (replicas / "eileen-talking" / "video.npz").is_file()
        listed = [r["replica_id"] for r in c.get("/v2/replicas?limit=100", headers=AUTH).json()["data"]]
        assert "eileen-talking" in listed

        refused = c.post(
            "/v2/replicas", data={"replica_name": "Short"}, files={"video": ("short.mp4", short, "video/mp4")},
            headers=AUTH,
        )
        assert refused.status_code == 422
        assert refused.json()["error"] == (
            "video: 'short.mp4': the video is 4.0 s long; 10-120 s is allowed "
            "(the person talking and listening, face to camera)"
        )
        both = c.post(
            "/v2/replicas", data={"replica_name": "Both"},
            files={"video": ("a.mp4", short, "video/mp4"), "image": ("a.png", b"x", "image/png")}, headers=AUTH,
        )
        assert both.status_code == 422 and "not both" in both.json()["error"]
        neither = c.post("/v2/replicas", data={"replica_name": "None"}, headers=AUTH)
        assert neither.status_code == 422 and neither.json()["error"].startswith("image: field required")
    assert sorted(p.name for p in replicas.iterdir()) == ["ada", "eileen", "eileen-talking", "leo"]
