"""dashboards.push against a recording HTTP server that answers like Grafana's API.

There is no Grafana here; the server records each request (method, path, auth header,
JSON body) and answers with the shapes Grafana documents for /api/folders and
/api/dashboards/db, so the test checks what goes over the wire.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dashboards.push import main, push_dashboards, push_from_env
from storepulse.errors import BackendUnavailable, ConfigError
from tests.fixtures.prometheus import free_port

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    url: str
    folders: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana(url="")

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((self.command, self.path, self.headers.get("Authorization", ""), body))
            return body

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._record()
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Unauthorized"})
            if self.path.split("?")[0] == "/api/folders":
                return self._reply(200, state.folders)
            return self._reply(404, {"message": "Not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = self._record()
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Unauthorized"})
            if self.path == "/api/folders":
                folder = {"id": len(state.folders) + 1, "uid": body["uid"], "title": body["title"]}
                state.folders.append(folder)
                return self._reply(200, folder)
            if self.path == "/api/dashboards/db":
                uid = body["dashboard"]["uid"]
                state.dashboards[uid] = body
                return self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}", "version": 1})
            return self._reply(404, {"message": "Not found"})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_push_creates_folder_and_overwrites_every_dashboard(grafana: FakeGrafana) -> None:
    pushed = push_dashboards(grafana.url, TOKEN, folder="Store Pulse")
    on_disk = {json.loads(p.read_text())["uid"]: json.loads(p.read_text()) for p in DASHBOARD_DIR.glob("*.json")}
    assert sorted(pushed) == sorted(on_disk) == ["storepulse-engine", "storepulse-footfall"]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth, _ in grafana.requests)
    assert grafana.folders == [{"id": 1, "uid": "store-pulse", "title": "Store Pulse"}]
    for uid, body in grafana.dashboards.items():
        assert body["overwrite"] is True
        assert body["folderUid"] == "store-pulse"
        assert body["dashboard"]["id"] is None
        assert {k: v for k, v in body["dashboard"].items() if k != "id"} == on_disk[uid]


def test_second_push_reuses_the_folder(grafana: FakeGrafana) -> None:
    push_dashboards(grafana.url, TOKEN)
    push_dashboards(grafana.url, TOKEN)
    folder_posts = [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")]
    dashboard_posts = [r for r in grafana.requests if r[:2] == ("POST", "/api/dashboards/db")]
    assert len(folder_posts) == 1
    assert len(dashboard_posts) == 4
    assert grafana.folders[0]["uid"] == "storepulse"


def test_existing_folder_with_the_same_title_is_used(grafana: FakeGrafana) -> None:
    grafana.folders.append({"id": 7, "uid": "abc123", "title": "storepulse"})
    push_dashboards(grafana.url, TOKEN)
    assert {b["folderUid"] for b in grafana.dashboards.values()} == {"abc123"}
    assert not [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")]


def test_wrong_token_is_a_config_error_naming_the_variable(grafana: FakeGrafana) -> None:
    with pytest.raises(ConfigError, match="STOREPULSE_GRAFANA_TOKEN"):
        push_dashboards(grafana.url, "wrong")
    assert grafana.dashboards == {}


def test_unreachable_grafana_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="could not be reached"):
        push_dashboards(f"http://127.0.0.1:{free_port()}", TOKEN)


def test_push_from_env_and_main(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="STOREPULSE_GRAFANA_URL"):
        push_from_env({})
    env = {"STOREPULSE_GRAFANA_URL": grafana.url, "STOREPULSE_GRAFANA_TOKEN": TOKEN}
    assert sorted(push_from_env(env)) == ["storepulse-engine", "storepulse-footfall"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pushed storepulse-engine",
        "pushed storepulse-footfall",
    ]
    monkeypatch.setenv("STOREPULSE_GRAFANA_TOKEN", "wrong")
    assert main([]) == 1
    assert "rejected the credentials" in capsys.readouterr().err
