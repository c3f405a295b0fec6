"""``edgesched task-manager``: the seed's split layout, without its loss window.

It serves the seed's ImageUpload protocol and forwards every picture's bytes to the gateway
(``POST /api/v1/seed/upload``); the client is answered only after the gateway has journaled the
task, so nothing is acknowledged that could be lost, and no shared file system is needed.
"""

from __future__ import annotations

import base64
import logging

import grpc
import httpx

from edgesched.errors import (
    BadInputError,
    DiskFullError,
    EdgeschedError,
    LimitExceededError,
    TransportError,
)
from edgesched.master.seed import SeedUpload
from edgesched.master.seed_grpc import image_upload_handler
from edgesched.master.server import grpc_options

log = logging.getLogger("edgesched.task_manager")


def _error_for(status: int, msg: str) -> EdgeschedError:
    if status == 413:
        return LimitExceededError(msg)
    if status == 507 or (status == 503 and "space" in msg):
        return DiskFullError(msg)
    if 400 <= status < 500:
        return BadInputError(msg)
    return TransportError(f"gateway answered {status}: {msg}")


class TaskManager:
    def __init__(
        self,
        gateway_url: str,
        bind: str = "0.0.0.0",
        port: int = 9999,
        strategy: str = "",
        max_upload_bytes: int = 32 * 1024 * 1024,
        api_token: str = "",
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.bind = bind
        self.port = port
        self.strategy = strategy
        self.max_upload_bytes = max_upload_bytes
        self.server: grpc.aio.Server | None = None
        # the gateway's upload route changes something: it needs the API token
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._client = httpx.AsyncClient(timeout=30.0, headers=headers)

    async def forward(self, client_ip: str, upload: SeedUpload) -> tuple[str, str]:
        body = {
            "client_ip": client_ip,
            "filename": upload.filename,
            "content_b64": base64.b64encode(upload.payload).decode("ascii"),
            "tasktype": upload.task_type,
            "req_id": upload.req_id,
            "total_num": upload.total_num,
            "strategy": self.strategy,
        }
        try:
            response = await self._client.post(f"{self.gateway_url}/api/v1/seed/upload", json=body)
        except httpx.HTTPError as exc:
            raise TransportError(f"gateway {self.gateway_url} unreachable: {exc}") from exc
        if response.status_code != 200:
            try:
                msg = str(response.json().get("msg", response.text))
            except ValueError:
                msg = response.text
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
