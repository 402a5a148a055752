"""Times as users type them: ``90s``, ``30m``, ``2h``, ``1d``, ``1w`` or an ISO 8601 time.

``balsam report --since 2h`` means "from two hours ago"; ``--since 2024-05-01T12:00`` a time
(naive times are local time, as a user at a terminal reads them; ``Z`` or an offset is kept).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

#: Seconds per unit of a duration's suffix.
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"1.5h"``, ``"2d"``, ``"1w"``, or several (``"1h30m"``).

    Raises ValueError for anything else (a bare number too: its unit would be a guess).
    """
    spec = text.strip().lower()
    parts = list(_DURATION.finditer(spec))
    if not spec or "".join(p.group(0) for p in parts).replace(" ", "") != spec.replace(" ", ""):
        raise ValueError(
            f"{text!r} is not a duration (a number and a unit: s, m, h, d or w, e.g. 30m, 2h)"
        )
    return timedelta(seconds=sum(float(p.group(1)) * UNIT_SECONDS[p.group(2)] for p in parts))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The time ``text`` names: a duration before ``now`` (``2h``) or an ISO 8601 time.

    Returns an aware UTC datetime; raises ValueError naming both accepted forms.
    """
    now = datetime.now(UTC) if now is None else now
    spec = text.strip()
    try:
        return (now - parse_duration(spec)).astimezone(UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(spec)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration before now (30m, 2h, 1d) nor an ISO 8601 time "
            "(2024-05-01T12:00)"
        ) from None
    # A naive time is the user's local time (astimezone on a naive datetime assumes so).
    return when.astimezone(UTC)
