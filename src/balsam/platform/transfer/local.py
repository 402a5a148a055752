"""Moving a job's files on this machine, and Balsam 0.5's ``scp:`` URLs.

Handled here: plain paths (relative ones are taken from a base directory, the workflow
database's), ``file://`` URLs and Balsam 0.5's ``local:PATH``, and 0.5's ``scp:[USER@]HOST:PATH``
through the ``scp`` command (``-p -r``: times, modes and directories kept; it uses the user's
ssh keys and configuration, and never asks for a password: ``BatchMode``). :func:`local_path`
returns None for a URL that is not local, so the caller can hand it to another adapter.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

from balsam.platform.transfer.errors import TransferError

#: How long one scp may take before the job's staging fails (a hung connection must not
#: hold a job for ever).
SCP_TIMEOUT_SECONDS = 3600.0


def local_path(url: str, base: Path) -> Path | None:
    """The local path ``url`` names (relative to ``base``), or None for a remote URL."""
    if url.startswith("local:"):
        url = url.removeprefix("local:")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        return None
    path = Path(url).expanduser()
    return path if path.is_absolute() else base / path


def patterns_of(text: str) -> list[str]:
    """Glob patterns from a whitespace-separated list (Balsam's ``input_files`` format)."""
    return text.split()


def copy_item(src: Path, dst_dir: Path, name: str = "") -> Path:
    """Copy a file or a directory tree into ``dst_dir`` (as ``name``, default its own);
    returns the new path."""
    target = dst_dir / (name or src.name)
    if src.is_dir():
        shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, target)
    return target


def copy_matching(
    src_dir: Path,
    patterns: list[str],
    dst_dir: Path,
    taken: set[str] | None = None,
    suffix: str = "",
) -> list[Path]:
    """Copy every entry of ``src_dir`` matching one of ``patterns`` into ``dst_dir``.

    ``taken``: names already copied in by an earlier source of the same stage-in; an entry of
    such a name is copied as ``NAME_SUFFIX`` instead of over it (Balsam 0.5 kept every parent's
    file so), and the names used are added to ``taken``.
    """
    matched: dict[Path, None] = {}
    for pattern in patterns:
        for src in sorted(src_dir.glob(pattern)):
            matched.setdefault(src)
    dst_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in matched:
        name = src.name
        if taken is not None and name in taken and suffix:
            name = f"{name}_{suffix}"
        if src.resolve() == (dst_dir / name).resolve():
            continue
        try:
            copied.append(copy_item(src, dst_dir, name))
        except OSError as exc:
            raise TransferError(f"cannot copy {src} to {dst_dir}: {exc}") from exc
        if taken is not None:
            taken.add(name)
    return copied


def scp(sources: list[str], destination: str) -> None:
    """``scp -p -r SOURCES DESTINATION`` (TransferError with scp's own message)."""
    argv = ["scp", "-p", "-r", "-o", "BatchMode=yes", "--", *sources, destination]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SCP_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise TransferError("cannot run scp: it is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise TransferError(f"scp to {destination} took over {SCP_TIMEOUT_SECONDS:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise TransferError(f"scp failed ({done.returncode}): {lines[-1] if lines else ''}")


class LocalAdapter:
    """Plain paths, ``file://`` and ``local:`` URLs: copies on this machine."""

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """Copy a local file, or a local directory's contents, into ``dst_dir``."""
        src = local_path(url, base)
        if src is None:
            raise TransferError(f"cannot stage in from {url}: not a local path")
        if not src.exists():
            raise TransferError(f"cannot stage in from {url}: {src} does not exist")
        if src.is_dir():
            return copy_matching(src, ["*", ".*"], dst_dir)
        dst_dir.mkdir(parents=True, exist_ok=True)
        try:
            return [copy_item(src, dst_dir)]
        except OSError as exc:
            raise TransferError(f"cannot copy {src} to {dst_dir}: {exc}") from exc

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """Copy the entries of ``src_dir`` matching ``patterns`` into the local ``url``."""
        dst = local_path(url, base)
        if dst is None:
            raise TransferError(f"cannot stage out to {url}: not a local path")
        try:
            return copy_matching(src_dir, patterns, dst)
        except OSError as exc:
            raise TransferError(f"cannot stage out to {url}: {exc}") from exc


class ScpAdapter:
    """Balsam 0.5's ``scp:[USER@]HOST:PATH`` through the scp command."""

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """scp the remote path into ``dst_dir``; returns the entries it added."""
        dst_dir.mkdir(parents=True, exist_ok=True)
        before = set(dst_dir.iterdir())
        scp([url.removeprefix("scp:")], f"{dst_dir}/")
        return sorted(set(dst_dir.iterdir()) - before) or [dst_dir]

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """scp the entries matching ``patterns`` to the remote path."""
        matched = matching(src_dir, patterns)
        if matched:
            scp([str(p) for p in matched], url.removeprefix("scp:"))
        return matched


def matching(src_dir: Path, patterns: list[str]) -> list[Path]:
    """The entries of ``src_dir`` matching any of ``patterns``, sorted, each once."""
    return sorted({p for pattern in patterns for p in src_dir.glob(pattern)})
