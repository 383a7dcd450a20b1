"""`kraiter dev`: the whole system (API, worker, beat) on the embedded defaults, one command.

The same processes the Procfile runs, supervised together: if one dies the others are stopped,
and Ctrl-C shuts them all down gracefully (the worker hands unfinished messages back).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app import db
from app.config import Settings
from app.migrate import upgrade

DEV_TENANT_FILE = "dev-tenant.json"


def _dev_credentials(settings: Settings) -> dict[str, str]:
    """The development tenant and key, created once and remembered in the data folder."""
    from app.auth import tenant_for_key
    from app.services import tenants

    path = settings.data_dir / DEV_TENANT_FILE
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
        with db.transaction():
            if tenant_for_key(saved["apiKey"]) == saved["tenantId"]:
                return saved
    with db.transaction() as session:
        tenant, issued = tenants.create_tenant(session, name="Development")
    saved = {"tenantId": tenant.id, "apiKey": issued.raw_key}
    path.write_text(json.dumps(saved))
    path.chmod(0o600)
    return saved


def _commands(port: int, settings: Settings) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "web": [python, "-m", "gunicorn", "-c", "python:app.gunicorn_conf",
                "--workers", "1", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        "worker": [python, "-m", "celery", "-A", "tasks.worker", "worker", "--loglevel",
                   "INFO", "--concurrency", "2"],
        "beat": [python, "-m", "celery", "-A", "tasks.worker", "beat", "--loglevel", "INFO",
                 "--schedule", str(settings.data_dir / "celerybeat-schedule")],
    }


def _banner(port: int, credentials: dict[str, str], settings: Settings) -> str:
    url = f"http://127.0.0.1:{port}"
    return f"""
Kraiter is running (embedded mode, data in {settings.data_dir})
  API:      {url}/api   (OpenAPI: {url}/api/openapi.json)
  API key:  {credentials['apiKey']}   (tenant {credentials['tenantId']})
  Dashboard: {url}/dashboard   (sign in with the API key)

Try it:
  curl -X POST {url}/events \\
    -H "Authorization: Bearer {credentials['apiKey']}" \\
    -H "Content-Type: application/json" \\
    -d '{{"email": "alice@example.com", "event": "purchase.completed",
         "properties": {{"amount": 49.99}}}}'
  curl "{url}/events?email=alice@example.com" -H "Authorization: Bearer {credentials['apiKey']}"
"""


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def run_dev(*, port: int | None = None) -> int:
    """Migrate, make sure a dev tenant exists, run web + worker + beat until one stops."""
    settings = Settings.from_env()
    port = port or int(os.environ.get("PORT", "8000"))
    upgrade(settings.database_url)
    db.init_engine(settings.database_url)
    credentials = _dev_credentials(settings)
    env = {**os.environ, "KRAITER_DATA_DIR": str(settings.data_dir), "PORT": str(port),
           "PUBLIC_URL": os.environ.get("PUBLIC_URL", f"http://127.0.0.1:{port}")}
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    processes: dict[str, subprocess.Popen[bytes]] = {
        name: subprocess.Popen(command, env=env)  # noqa: S603 (our own fixed commands)
        for name, command in _commands(port, settings).items()
    }
    print(_banner(port, credentials, settings), flush=True)

    def _on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while all(process.poll() is None for process in processes.values()):
            time.sleep(0.5)
        dead = [name for name, process in processes.items() if process.poll() is not None]
        print(f"kraiter dev: {', '.join(dead)} stopped; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(processes)
