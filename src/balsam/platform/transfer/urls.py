"""Which adapter a stage-in or stage-out URL belongs to.

The rule, in order:

1. ``gsiftp://`` (Balsam 0.5's GridFTP) is refused with a line naming what to use instead;
2. ``scp:`` is Balsam 0.5's scp (kept as it was), ``local:`` and ``file://`` are local;
3. ``rsync://``, ``http://``, ``https://`` and ``globus://`` are their adapters;
4. ``[USER@]HOST:PATH`` with no ``://`` is rsync over ssh, where HOST is a host name or an
   IPv4 address of **at least two characters** with no ``/`` or ``\\`` before the colon, so
   that ``C:\\data`` or ``C:/data`` (a Windows drive), ``./a:b`` and ``dir/a:b`` (relative
   paths holding a colon) stay local paths;
5. anything else with a scheme (``ftp://``, ``s3://``) is refused; the rest is a local path.

A relative file whose name starts with ``word:`` must be written ``./word:...`` to be local
(the rsync command reads it the same way).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from balsam.platform.transfer.errors import TransferError

GRIDFTP_REFUSAL = (
    "GridFTP (gsiftp://) is not supported: use rsync://HOST/MODULE/PATH, HOST:PATH (rsync over "
    "ssh), scp:HOST:PATH, or a Globus transfer (globus://ENDPOINT/PATH) where the site has one"
)
SUPPORTED = (
    "supported: local paths, file://, local:, scp:HOST:PATH, rsync://HOST/MODULE/PATH, "
    "[USER@]HOST:PATH, http(s):// (stage-in only) and globus://ENDPOINT/PATH"
)
#: URL schemes and the short name of the adapter that moves them.
SCHEMES = {
    "file": "local",
    "rsync": "rsync",
    "http": "http",
    "https": "http",
    "globus": "globus",
}
_HOST_PATH = re.compile(
    r"^(?:[A-Za-z0-9._+-]+@)?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?:(?P<path>.*)$", re.S
)


def is_host_path(url: str) -> bool:
    """``[USER@]HOST:PATH`` for rsync over ssh (the module docstring's rule 4)."""
    if "://" in url:
        return False
    match = _HOST_PATH.match(url)
    if match is None:
        return False
    host = url[: len(url) - len(match.group("path")) - 1].rpartition("@")[2]
    return len(host) >= 2 and host.lower() not in (*SCHEMES, "scp", "local", "gsiftp")


def adapter_name(url: str, what: str) -> str:
    """The short name of the adapter for ``url`` (TransferError for one Balsam cannot move;
    ``what``: "stage in from" or "stage out to", for the message)."""
    if url.startswith("gsiftp:"):
        raise TransferError(f"cannot {what} {url}: {GRIDFTP_REFUSAL}")
    if url.startswith("scp:"):
        return "scp"
    if url.startswith("local:"):
        return "local"
    if is_host_path(url):
        return "rsync"
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise TransferError(f"cannot {what} {url}: not a URL ({exc})") from None
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        return "local"
    if scheme in SCHEMES:
        return SCHEMES[scheme]
    raise TransferError(f"cannot {what} {url}: the scheme {scheme}:// is not {SUPPORTED}")
