"""Globus tokens: the native-app login, the 0600 token file, refreshed access tokens.

``balsam transfer login`` (:func:`login`) runs globus-sdk's native-app flow: it prints a URL,
the user signs in with their identity provider in any browser and pastes back the code;
the refresh token (and the current access token) for the Transfer API are saved in
``transfer.globus_tokens_file``, created mode 0600. Launchers then build a
``RefreshTokenAuthorizer`` from that file (:func:`transfer_client`), which gets a new access
token when the old one expires and writes it back (still 0600). The native app's client id
is ``transfer.globus_client_id`` (an app registered at app.globus.org as a "native app").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balsam.platform.transfer.errors import TransferError
from balsam.transfer_settings import TransferSettings

if TYPE_CHECKING:
    import globus_sdk

#: The token file's key for the Transfer API's tokens.
TRANSFER_SERVER = "transfer.api.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"


def _sdk() -> Any:
    try:
        import globus_sdk
    except ImportError:
        raise TransferError("globus:// needs globus-sdk: pip install 'balsam[transfer]'") from None
    return globus_sdk


def save_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """Write ``tokens`` to ``path`` atomically, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(tokens, out)
    os.replace(tmp, path)


def load_tokens(path: Path) -> dict[str, Any]:
    """The Transfer API's tokens from ``path`` (TransferError naming the login command)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tokens = data[TRANSFER_SERVER]
        if not isinstance(tokens, dict) or "refresh_token" not in tokens:
            raise KeyError("refresh_token")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TransferError(
            f"no Globus tokens in {path} ({type(exc).__name__}: {exc}): run 'balsam transfer login'"
        ) from None
    return tokens


def _client_id(settings: TransferSettings) -> str:
    if not settings.globus_client_id:
        raise TransferError("Globus needs a native app: set transfer.globus_client_id")
    return settings.globus_client_id


def authorizer(settings: TransferSettings) -> globus_sdk.RefreshTokenAuthorizer:
    """A refreshing authorizer from the token file; refreshed tokens are written back."""
    sdk = _sdk()
    path = settings.tokens_path
    tokens = load_tokens(path)
    auth = sdk.NativeAppAuthClient(_client_id(settings))

    def saved(response: globus_sdk.OAuthRefreshTokenResponse) -> None:
        fresh = response.by_resource_server[TRANSFER_SERVER]
        save_tokens(path, {TRANSFER_SERVER: {**tokens, **_token_fields(fresh)}})

    return sdk.RefreshTokenAuthorizer(  # type: ignore[no-any-return]
        tokens["refresh_token"],
        auth,
        access_token=tokens.get("access_token"),
        expires_at=tokens.get("expires_at_seconds"),
        on_refresh=saved,
    )


def _token_fields(tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        k: tokens[k]
        for k in ("access_token", "refresh_token", "expires_at_seconds")
        if tokens.get(k)
    }


#: globus-sdk's own retries of one call (a 401 refresh, a 5xx, a lost connection): few, since
#: a transient failure costs the job one of Balsam's bounded retries (``transfer.max_retries``).
SDK_RETRIES = 1


def transfer_client(settings: TransferSettings) -> globus_sdk.TransferClient:
    """A TransferClient with the saved tokens (``GLOBUS_SDK_ENVIRONMENT`` and
    ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` choose the server, as globus-sdk documents)."""
    sdk = _sdk()
    from globus_sdk.transport import RetryConfig

    return sdk.TransferClient(  # type: ignore[no-any-return]
        authorizer=authorizer(settings), retry_config=RetryConfig(max_retries=SDK_RETRIES)
    )


def login(
    settings: TransferSettings,
    ask: Callable[[str], str],
    say: Callable[[str], None],
) -> Path:
    """The native-app login: show the URL, read the code, save the tokens; returns the file."""
    sdk = _sdk()
    auth = sdk.NativeAppAuthClient(_client_id(settings))
    auth.oauth2_start_flow(requested_scopes=TRANSFER_SCOPE, refresh_tokens=True)
    url = auth.oauth2_get_authorize_url()
    say(f"Sign in to Globus at this URL, then paste the code it shows:\n{url}")
    code = ask("Code: ").strip()
    if not code:
        raise TransferError("no code given: nothing saved")
    try:
        response = auth.oauth2_exchange_code_for_tokens(code)
    except sdk.GlobusAPIError as exc:
        raise TransferError(
            f"Globus refused the code: HTTP {exc.http_status} {exc.message}"
        ) from None
    tokens = _token_fields(response.by_resource_server[TRANSFER_SERVER])
    save_tokens(settings.tokens_path, {TRANSFER_SERVER: tokens})
    return settings.tokens_path
