"""Reading a request body under its Content-Encoding, never past gateway.max_body_bytes.

See gateway.formats for what is accepted; this module holds the one coroutine
that reads an aiohttp request (:func:`read_body`) and its pure decoder.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

from gateway.errors import BodyError
from gateway.limits import Hold, InflightFull, Limits, UnsupportedEncoding, too_large, too_slow

if TYPE_CHECKING:
    from aiohttp import web

ENCODINGS = ("identity", "gzip", "deflate")
_ENCODING_ALIASES = {"": "identity", "x-gzip": "gzip"}
# Bytes read from the socket at a time.
READ_CHUNK_BYTES = 64 * 1024


def content_coding(header: str | None) -> str:
    """The one coding a Content-Encoding header names: identity, gzip or deflate; else UnsupportedEncoding."""
    codings = [_ENCODING_ALIASES.get(c, c) for c in (c.strip().lower() for c in (header or "").split(","))]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ENCODINGS:
        return codings[0]
    raise UnsupportedEncoding(f"unsupported Content-Encoding {header!r}; send one of {', '.join(ENCODINGS)}")


def _is_zlib_header(head: bytes) -> bool:
    """RFC 1950: method 8 (deflate), window <= 32 KiB, and the two header bytes a multiple of 31."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class BodyDecoder:
    """Undoes one content coding as chunks arrive, holding at most ``max_body_bytes + 1`` decoded bytes."""

    def __init__(self, coding: str, max_body_bytes: int) -> None:
        if coding not in ENCODINGS:
            raise ValueError(f"unknown coding {coding!r}")
        self.coding = coding
        self.limit = max_body_bytes
        self.received = 0  # bytes as sent
        self.produced = 0  # bytes once decoded
        self._parts: list[bytes] = []
        self._inflater: Any = None  # zlib.Decompress, made once the stream's kind is known
        self._head = b""  # deflate: first bytes, held until the zlib header can be checked

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise too_large(self.limit, "body" if self.coding == "identity" else "compressed")
        if self.coding == "identity":
            self._keep(chunk)
            return
        if self._inflater is None:
            if self.coding == "gzip":
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                self._head += chunk
                if len(self._head) < 2:
                    return
                chunk, self._head = self._head, b""
                self._inflater = zlib.decompressobj(zlib.MAX_WBITS if _is_zlib_header(chunk) else -zlib.MAX_WBITS)
        self._inflate(chunk)

    def finish(self) -> bytes:
        """The whole decoded body; BodyError if the compressed stream stopped short."""
        if self.coding != "identity":
            if self._inflater is None and self._head:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # one byte cannot be a zlib header
                self._inflate(self._head)
            if self._inflater is None or not self._inflater.eof:
                raise BodyError(f"body is not valid {self.coding}: the stream ends before the compressed data does")
        return b"".join(self._parts)

    def _inflate(self, data: bytes) -> None:
        inflater = self._inflater
        while data:
            if inflater.eof:  # input left after the end of a stream
                if self.coding != "gzip":
                    raise BodyError(f"body is not valid deflate: {len(data)} bytes after the end of the stream")
                inflater = self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next gzip member
            try:
                # One byte past the limit is enough to know the limit is passed: never inflate more.
                self._keep(inflater.decompress(data, self.limit - self.produced + 1))
            except zlib.error as exc:
                raise BodyError(f"body is not valid {self.coding}: {exc}") from exc
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def _keep(self, out: bytes) -> None:
        self.produced += len(out)
        if self.produced > self.limit:
            raise too_large(self.limit, "body" if self.coding == "identity" else "decoded")
        if out:
            self._parts.append(out)


async def read_body(request: web.Request, limits: Limits, hold: Hold | None = None) -> bytes:
    """The request's body with its Content-Encoding undone, within ``limits.max_body_bytes`` both ways.

    ``hold`` grows with the decoded bytes as they arrive; InflightFull once the gateway holds too many.
    """
    coding = content_coding(request.headers.get("Content-Encoding"))
    if getattr(request.content, "total_compressed_bytes", None) is not None:
        # aiohttp inflated the body already, with no limit of ours: a wiring mistake, not a client's.
        raise RuntimeError("aiohttp decoded the request body itself; serve the app with "
                           "handler_args={'auto_decompress': False}")
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise too_large(limits.max_body_bytes, "body" if coding == "identity" else "compressed")
    decoder = BodyDecoder(coding, limits.max_body_bytes)

    def take(chunk: bytes) -> None:
        decoder.feed(chunk)
        if hold is not None and not hold.grow_to(decoder.produced):
            raise InflightFull()

    if request.content.is_eof():
        # The whole body came with the headers (most small requests): taken at once, with no timer
        # and no async iteration (about a tenth of the gateway's samples on single-row requests).
        take(request.content.read_nowait())
        return decoder.finish()
    try:
        # A client that sends its headers and then trickles (or never sends) its body must not
        # hold a connection and a buffer for ever.
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                take(chunk)
    except TimeoutError:
        raise too_slow(limits) from None
    return decoder.finish()


# --- objects: JSON, NDJSON, msgpack -------------------------------------------------------------


