"""Reading an uploaded image within the server's limits, before anything decodes it.

The body is counted while it arrives (a declared Content-Length over the limit is
refused before reading), parsed as multipart/form-data with one file field, and the
file is accepted only when its first bytes are those of a JPEG, PNG, WebP or BMP --
the declared content type is not trusted.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .security import Refusal

__all__ = ["IMAGE_TYPES", "image_type", "read_upload"]

IMAGE_TYPES = "JPEG, PNG, WebP or BMP"
# Room for the multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 16 * 1024


def image_type(head: bytes) -> str | None:
    """The image format its first bytes announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def _too_large(size: int | str, limit: int) -> Refusal:
    return Refusal(413, f"the upload is {size} bytes; this server accepts images up to {limit} bytes.")


async def read_upload(request: Request, max_bytes: int, field: str = "file") -> bytes:
    """The bytes of the image in form field `field`; a Refusal for everything else."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise Refusal(415, f"send the image as multipart/form-data in a field named {field}.")
    limit = max_bytes + _MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(declared, max_bytes)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(f"more than {limit}", max_bytes)
        chunks.append(chunk)

    async def replay():
        for chunk in chunks:
            yield chunk

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=4).parse()
    except MultiPartException as exc:
        raise Refusal(400, f"the multipart body cannot be read ({str(exc).rstrip('.')}).") from None
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise Refusal(400, f"the form has no file in a field named {field}.")
        data = await upload.read()
    finally:
        await form.close()
    if not data:
        raise Refusal(400, "the uploaded file is empty.")
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    if image_type(data[:16]) is None:
        raise Refusal(415, f"the upload is not a {IMAGE_TYPES} image.")
    return data
