"""Push the storepulse Grafana dashboards to a running Grafana over its HTTP API.

Reads every ``*.json`` dashboard shipped in this package; writes each one to the Grafana at
the given URL, into a folder (created if missing), with ``overwrite`` so that a push
replaces the dashboard of the same ``uid`` (Grafana keeps the old one as a version).
Pushing twice yields the same dashboards. The token is a Grafana service-account token with
the Editor role; it is sent as a bearer token and never logged.

docker-compose.yml does not need this: its Grafana is provisioned from
``dashboards/provisioning``. This is for a Grafana that already exists.

>>> sorted(d["uid"] for d in load_dashboards())
['storepulse-engine', 'storepulse-footfall']
>>> folder_uid("StorePulse / Ops")
'storepulse-ops'
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaUnauthorizedError

from storepulse.errors import BackendUnavailable, ConfigError, StorepulseError

DASHBOARD_DIR = Path(__file__).resolve().parent
URL_VARIABLE = "STOREPULSE_GRAFANA_URL"
TOKEN_VARIABLE = "STOREPULSE_GRAFANA_TOKEN"


def load_dashboards(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every dashboard JSON in ``directory`` (default: this package), sorted by file name."""
    directory = DASHBOARD_DIR if directory is None else directory
    dashboards = []
    for path in sorted(directory.glob("*.json")):
        try:
            dashboard = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StorepulseError(f"dashboard {path}: cannot read it as JSON: {exc}") from exc
        if not (isinstance(dashboard, dict) and dashboard.get("uid") and dashboard.get("title")):
            raise StorepulseError(f"dashboard {path}: needs a JSON object with a uid and a title")
        dashboards.append(dashboard)
    if not dashboards:
        raise StorepulseError(f"no dashboard JSON files in {directory}")
    return dashboards


def folder_uid(title: str) -> str:
    """A Grafana folder uid made from ``title``: lower case, ``-`` between words, 40 chars."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:40] or "storepulse"


def push_dashboards(url: str, token: str, folder: str = "storepulse") -> list[str]:
    """Create or replace every dashboard in Grafana folder ``folder``; the uids pushed.

    ``url`` is Grafana's base URL (``https://grafana.example.com`` or with a sub-path);
    an empty ``token`` falls back to ``user:password@`` in the URL.
    """
    api = GrafanaApi.from_url(url, credential=token or None, timeout=10.0)
    try:
        target_folder = _ensure_folder(api, folder)
        pushed = []
        for dashboard in load_dashboards():
            body = {**dashboard, "id": None}
            api.dashboard.update_dashboard(
                {
                    "dashboard": body,
                    "folderUid": target_folder,
                    "overwrite": True,
                    "message": "storepulse dashboards push",
                }
            )
            pushed.append(str(dashboard["uid"]))
    except GrafanaUnauthorizedError as exc:
        raise ConfigError(
            f"Grafana at {_safe(url)} rejected the credentials (HTTP 401): set "
            f"{TOKEN_VARIABLE} to a service-account token with the Editor role"
        ) from exc
    except GrafanaException as exc:
        if not exc.status_code:
            raise BackendUnavailable(
                f"Grafana at {_safe(url)} could not be reached: {exc.message}"
            ) from exc
        raise StorepulseError(
            f"Grafana at {_safe(url)} refused the push (HTTP {exc.status_code}): {exc.message}"
        ) from exc
    except OSError as exc:  # connection refused, DNS, TLS: raised by the HTTP library
        raise BackendUnavailable(f"Grafana at {_safe(url)} could not be reached: {exc}") from exc
    return pushed


def _ensure_folder(api: GrafanaApi, title: str) -> str:
    """The uid of the folder titled ``title`` (or with its slug as uid), created if missing."""
    wanted = folder_uid(title)
    for existing in api.folder.get_all_folders() or []:
        if existing.get("title") == title or existing.get("uid") == wanted:
            return str(existing["uid"])
    created = api.folder.create_folder(title, uid=wanted)
    return str(created.get("uid", wanted))


def _safe(url: str) -> str:
    """``url`` without a password in it, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)


def push_from_env(
    environ: Mapping[str, str] | None = None, folder: str = "storepulse"
) -> list[str]:
    """``push_dashboards`` with the URL and token from STOREPULSE_GRAFANA_URL / _TOKEN."""
    env = os.environ if environ is None else environ
    url = env.get(URL_VARIABLE, "")
    if not url:
        raise ConfigError(
            f"{URL_VARIABLE} is not set: give Grafana's base URL, e.g. http://localhost:3000"
        )
    return push_dashboards(url, env.get(TOKEN_VARIABLE, ""), folder)


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboards.push [FOLDER]``: push with the environment's URL and token."""
    args = sys.argv[1:] if argv is None else argv
    try:
        uids = push_from_env(folder=args[0] if args else "storepulse")
    except StorepulseError as exc:
        print(f"storepulse dashboards push: {exc}", file=sys.stderr)
        return 1
    for uid in uids:
        print(f"pushed {uid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
