"""The seed's gRPC intake: ``/ImageUpload/UploadImage`` and ``/ImageUpload/UploadImages``.

Generic methods whose bodies are raw UTF-8 JSON (no protobuf), exactly as the seed's
task_manager serves them. The same handlers run in ``edgesched master`` (uploads journaled here)
and in a split ``edgesched task-manager`` (uploads forwarded to the gateway first).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from edgesched.errors import EdgeschedError
from edgesched.master.compat.intake import SeedUpload, parse_upload
from edgesched.master.errmap import grpc_code, printable
from edgesched.master.peers import peer_host

log = logging.getLogger("edgesched.seed")

#: (client ip, upload) → (saved file name, saved path)
Uploader = Callable[[str, SeedUpload], Awaitable[tuple[str, str]]]


def _code(exc: Exception) -> grpc.StatusCode:
    code = grpc_code(exc)
    # the seed answers every failure with INVALID_ARGUMENT; keep the more precise codes that a
    # seed client also treats as failure (disk full, master unavailable), map the rest
    return code if code != grpc.StatusCode.INTERNAL else grpc.StatusCode.INVALID_ARGUMENT


def image_upload_handler(uploader: Uploader) -> grpc.GenericRpcHandler:
    """The seed's gRPC image upload (a generic handler: no generated code for it): decodes
    the upload, hands it to ``uploader`` (the ``SeedIntake`` or the task manager's
    forwarder), encodes the reply and maps errors to status codes. Owns nothing; it may not
    touch the core, the journal or the files itself."""

    async def upload_image(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        client_ip = peer_host(context.peer())
        try:
            name, saved_path = await uploader(client_ip, parse_upload(body))
        except EdgeschedError as exc:
            await context.abort(_code(exc), printable(str(exc)))
            raise  # unreachable
        log.info("saved %s from %s", saved_path, client_ip)
        return json.dumps({"filename": name, "saved_path": saved_path}).encode()

    async def upload_images(
        bodies: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        client_ip = peer_host(context.peer())
        saved = 0
        problems: list[str] = []
        index = 0
        req_id = ""  #: the first one a message carries, as the seed's task manager keeps it
        made = f"{client_ip}_{uuid.uuid4().hex}"  #: the seed's own when no message has one
        async for body in bodies:
            index += 1
            try:
                upload = parse_upload(body)
                req_id = req_id or upload.req_id
                upload.stream_req_id = req_id or made
                await uploader(client_ip, upload)
                saved += 1
            except EdgeschedError as exc:
                # the seed skips bad messages silently; we keep going but say so at the end
                problems.append(f"message {index}: {printable(str(exc))}")
        if problems:
            context.set_trailing_metadata((("saved-count", str(saved)),))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{saved} of {index} saved; " + "; ".join(problems)[:2000],
            )
        # the fork's sender prints req_id
        return json.dumps({"saved_count": saved, "req_id": req_id or made}).encode()

    return grpc.method_handlers_generic_handler(
        "ImageUpload",
        {
            "UploadImage": grpc.unary_unary_rpc_method_handler(upload_image),
            "UploadImages": grpc.stream_unary_rpc_method_handler(upload_images),
        },
    )
