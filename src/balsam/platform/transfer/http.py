"""``http://`` and ``https://`` stage-in downloads with httpx.

- The body is streamed to ``NAME.part`` in the job directory and renamed to ``NAME`` when it
  is complete (and checked): a job never sees half a file under its real name.
- A dropped connection or a time-out is transient: the next try (``transfer.max_retries``)
  asks for the rest with ``Range: bytes=N-`` (and ``If-Range`` with the first answer's ETag,
  so a file that changed meanwhile comes whole); a server that answers 200 instead of 206
  sends the whole file again.
- Checksums: ``#ALGO=HEX`` at the end of the URL (``#sha256=...``, as pip reads it; any
  hashlib algorithm: md5, sha1, sha256, sha512, ...) and the response's ``Repr-Digest``
  (RFC 9530: ``sha-256=:BASE64:``) or ``Digest`` (RFC 3230: ``SHA-256=BASE64``) header. Each
  that is given is checked over the complete file; a mismatch deletes the file and fails the
  job (not retried). No checksum given: none checked.
- The file is named from ``Content-Disposition``'s filename when the server sends one, else
  from the URL path's last part (``download`` when it has none); never a path elsewhere.
- 5xx, 408 and 429 are transient; any other status that is not a success (404, 401, 403,
  410, ...) fails the job at once. ``transfer.connect_timeout_seconds`` bounds each
  connection, ``io_timeout_seconds`` each read, ``timeout_seconds`` the download as a whole.
- http(s) is for stage-in only: a stage-out to it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

from balsam.platform.transfer.errors import TransferError, TransientTransferError
from balsam.transfer_settings import TransferSettings

CHUNK = 1 << 20
#: Statuses a later try may not see again.
TRANSIENT_STATUS = {408, 429}
#: HTTP digest algorithm names (RFC 9530 and RFC 3230) and their hashlib names.
DIGEST_NAMES = {"sha-512": "sha512", "sha-256": "sha256", "sha": "sha1", "md5": "md5"}
_FRAGMENT = re.compile(r"^(?P<algo>[A-Za-z0-9_]+)=(?P<hex>[0-9A-Fa-f]+)$")


def file_name(url: str, disposition: str | None = None) -> str:
    """The downloaded file's name: ``Content-Disposition``'s, else the URL path's last part."""
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = _safe_name(message.get_filename() or "")
        if name:
            return name
    return _safe_name(unquote(urlsplit(url).path)) or "download"


def _safe_name(text: str) -> str:
    name = PurePosixPath(text.replace("\\", "/")).name
    return "" if name in ("", ".", "..") else name


def fragment_checksum(url: str) -> tuple[str, str] | None:
    """``(hashlib name, hex digest)`` from a ``#ALGO=HEX`` fragment, or None."""
    fragment = urlsplit(url).fragment
    match = _FRAGMENT.match(fragment)
    if not fragment:
        return None
    algo = match.group("algo").lower() if match else ""
    if not match or algo not in hashlib.algorithms_guaranteed or algo.startswith("shake"):
        raise TransferError(f"cannot stage in from {url}: #{fragment} is not #ALGO=HEX")
    return algo, match.group("hex").lower()


def header_checksums(headers: httpx.Headers) -> list[tuple[str, str]]:
    """``(hashlib name, hex digest)`` pairs from ``Repr-Digest`` and ``Digest`` headers."""
    found = []
    for header, pattern in (
        ("repr-digest", r"^([\w-]+)=:([^:]*):$"),
        ("digest", r"^([\w-]+)=(.+)$"),
    ):
        for item in headers.get_list(header, split_commas=True):
            match = re.match(pattern, item.strip())
            if match and match.group(1).lower() in DIGEST_NAMES:
                try:
                    digest = base64.b64decode(match.group(2), validate=True).hex()
                except ValueError:
                    continue
                found.append((DIGEST_NAMES[match.group(1).lower()], digest))
    return found


class HttpAdapter:
    """http(s) stage-in (the module docstring)."""

    def __init__(
        self, settings: TransferSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        #: ETags of downloads cut off mid-way, by URL, for ``If-Range`` on the next try.
        self.etags: dict[str, str] = {}

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """Download ``url`` into ``dst_dir`` (resuming a ``.part`` left by an earlier try)."""
        dst_dir.mkdir(parents=True, exist_ok=True)
        expected = fragment_checksum(url)
        part = dst_dir / f"{file_name(url)}.part"
        try:
            name, digests = self._fetch(url, part)
        except httpx.TimeoutException as exc:
            raise TransientTransferError(f"download of {url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientTransferError(f"download of {url} broke off: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransferError(f"cannot download {url}: {exc}") from exc
        _check(url, part, [*([expected] if expected else []), *digests])
        target = dst_dir / name
        part.replace(target)
        self.etags.pop(url, None)
        return [target]

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """Refused: http(s) URLs are for stage-in."""
        raise TransferError(f"cannot stage out to {url}: http(s) URLs are for stage-in only")

    def _fetch(self, url: str, part: Path) -> tuple[str, list[tuple[str, str]]]:
        """Stream the body into ``part``; returns the file's name and the header digests."""
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if offset and url in self.etags:
            headers["If-Range"] = self.etags[url]
        s = self.settings
        timeout = httpx.Timeout(s.io_timeout_seconds, connect=s.connect_timeout_seconds)
        deadline = time.monotonic() + s.timeout_seconds
        plain = url.partition("#")[0]
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, transport=self.transport) as c,
            c.stream("GET", plain, headers=headers) as response,
        ):
            append = _accept(url, response, offset, part)
            if etag := response.headers.get("etag"):
                self.etags[url] = etag
            with part.open("ab" if append else "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise TransientTransferError(
                            f"download of {url} took over {s.timeout_seconds:g} s"
                        )
            name = file_name(url, response.headers.get("content-disposition"))
            return name, header_checksums(response.headers)


def _accept(url: str, response: httpx.Response, offset: int, part: Path) -> bool:
    """Whether the answer continues ``part`` (206 from ``offset``); raises for a failure."""
    status = response.status_code
    if status == 416 and offset:
        part.unlink()  # the server will not resume it: start over on the next try
        raise TransientTransferError(f"the server refused to resume {url} (416)")
    if status >= 500 or status in TRANSIENT_STATUS:
        raise TransientTransferError(f"download of {url}: HTTP {status} {response.reason_phrase}")
    if status >= 300:
        raise TransferError(f"cannot download {url}: HTTP {status} {response.reason_phrase}")
    if status == 206:
        start = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
        if start is None or int(start.group(1)) != offset:
            part.unlink()
            raise TransientTransferError(f"the server resumed {url} at the wrong place")
        return True
    return False


def _check(url: str, part: Path, checksums: list[tuple[str, str]]) -> None:
    """Compare the complete file with each checksum; a mismatch deletes it (not retried)."""
    for algo, expected in checksums:
        digest = hashlib.new(algo)
        with part.open("rb") as src:
            while block := src.read(CHUNK):
                digest.update(block)
        if digest.hexdigest() != expected:
            part.unlink()
            raise TransferError(
                f"download of {url} failed its {algo} check: expected {expected}, "
                f"got {digest.hexdigest()}"
            )
