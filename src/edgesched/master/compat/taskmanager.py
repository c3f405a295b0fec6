"""``edgesched task-manager``: the seed's split layout, without its loss window.

It serves the seed's ImageUpload protocol and forwards every picture's bytes to the gateway
(``POST /api/v1/seed/upload``); the client is answered only after the gateway has journaled the
task, so nothing is acknowledged that could be lost, and no shared file system is needed.

The forward needs the gateway's API token. Beside the gateway (the seed's layout: one machine,
one working directory) it is read from the gateway's data directory at each forward, as is the
gateway's HTTP port (``endpoints.json``), so the seed's command line needs nothing more and a
rotated token is picked up; on another machine ``--api-token`` / ``EDGESCHED_API_TOKEN`` and
``--gateway`` say them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from pathlib import Path

import grpc
import httpx

from edgesched.errors import (
    AuthError,
    BadInputError,
    DiskFullError,
    EdgeschedError,
    LimitExceededError,
    TransportError,
)
from edgesched.master.compat.grpc import image_upload_handler
from edgesched.master.compat.intake import SeedUpload, canonical_ip
from edgesched.master.server import grpc_options
from edgesched.master.token import read_token

log = logging.getLogger("edgesched.task_manager")


def _error_for(status: int, msg: str) -> EdgeschedError:
    if status in (401, 403):
        return AuthError(f"the gateway refused the task manager: {msg}")
    if status == 413:
        return LimitExceededError(msg)
    if status == 507 or (status == 503 and "space" in msg):
        return DiskFullError(msg)
    if 400 <= status < 500:
        return BadInputError(msg)
    return TransportError(f"gateway answered {status}: {msg}")


class TaskManager:
    """The split layout's ``edgesched task-manager``: serves the seed's gRPC intake and
    forwards each upload to the gateway's ``/api/v1/seed/upload``. Owns its gRPC server and
    HTTP client; it holds no task state (the gateway's master journals them)."""

    def __init__(
        self,
        gateway_url: str = "",
        bind: str = "0.0.0.0",
        port: int = 9999,
        strategy: str = "",
        max_upload_bytes: int = 32 * 1024 * 1024,
        api_token: str = "",
        data_dir: str = "workspace/master",
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")  #: "" = the local gateway's endpoints.json
        self.bind = bind
        self.port = port
        self.strategy = strategy
        self.max_upload_bytes = max_upload_bytes
        self.api_token = api_token  #: "" = the local gateway's <data_dir>/api-token
        self.data_dir = Path(data_dir)
        self.server: grpc.aio.Server | None = None
        self._client = httpx.AsyncClient(timeout=30.0)

    def _target(self) -> tuple[str, dict[str, str]]:
        """The gateway's URL and the forward's headers: as given, else the local gateway's."""
        url = self.gateway_url
        if not url:
            port = 6666  # unless a local gateway has written the port it bound
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                port = int(json.loads((self.data_dir / "endpoints.json").read_text())["http_port"])
            url = f"http://127.0.0.1:{port}"
        token = self.api_token or read_token(self.data_dir, "api") or ""
        return url, ({"Authorization": f"Bearer {token}"} if token else {})

    async def forward(self, client_ip: str, upload: SeedUpload) -> tuple[str, str]:
        body = {
            # the peer's address in its one spelling (the gateway checks it again)
            "client_ip": canonical_ip(client_ip),
            "filename": upload.filename,
            "content_b64": base64.b64encode(upload.payload).decode("ascii"),
            "tasktype": upload.task_type,
            "req_id": upload.req_id,
            "stream_req_id": upload.stream_req_id,
            "total_num": upload.total_num,
            "strategy": self.strategy,
        }
        url, headers = await asyncio.to_thread(self._target)
        try:
            response = await self._client.post(
                f"{url}/api/v1/seed/upload", json=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"gateway {url} unreachable: {exc}") from exc
        if response.status_code != 200:
            try:
                msg = str(response.json().get("msg", response.text))
            except ValueError:
                msg = response.text
            if response.status_code == 401 and not headers:
                msg += (
                    f" (no API token: none given and none in {self.data_dir}/api-token; pass "
                    "--api-token or EDGESCHED_API_TOKEN, or --data-dir of the gateway)"
                )
            raise _error_for(response.status_code, msg)
        data = response.json()
        return str(data["filename"]), str(data["saved_path"])

    async def start(self) -> int:
        server = grpc.aio.server(options=grpc_options(self.max_upload_bytes + 1024 * 1024))
        server.add_generic_rpc_handlers((image_upload_handler(self.forward),))
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        self.port = server.add_insecure_port(f"{host}:{self.port}")
        await server.start()
        self.server = server
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=1.0)
        await self._client.aclose()
