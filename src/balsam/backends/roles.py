"""The roles of an owned PostgreSQL cluster, for the CLI (``balsam db add-user|drop-user|users``).

A thin seam: the CLI holds no store code (import-linter keeps it so), and this passes its
calls to :mod:`balsam.store.pgroles`, which documents the roles and their grants.
"""

from __future__ import annotations

from pathlib import Path

from balsam.config import Site
from balsam.store import pgroles
from balsam.store.pgroles import RoleInfo

#: Balsam's roles, weakest last: ``owner``, ``submitter``, ``viewer``.
BALSAM_ROLES = tuple(pgroles.GROUPS)


def add_user(site: Site, name: str, role: str) -> Path:
    """Create the login role ``name`` as ``role``; returns the 0600 file with its password."""
    return pgroles.add_user(site, name, role)


def drop_user(site: Site, name: str) -> None:
    """Remove the login role ``name`` (its sessions end) and its password file."""
    pgroles.drop_user(site, name)


def list_users(site: Site) -> list[RoleInfo]:
    """Every login role of the site's server, with its Balsam role."""
    return pgroles.list_users(site)


def refresh_grants(site: Site) -> None:
    """Grant the Balsam roles their privileges on the tables that exist now."""
    pgroles.refresh_grants(site)


__all__ = ["BALSAM_ROLES", "RoleInfo", "add_user", "drop_user", "list_users", "refresh_grants"]
