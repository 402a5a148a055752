"""`balsam server start --tls-cert --tls-key` on a real uvicorn with a self-signed certificate:
a RemoteBackend that trusts it (BALSAM_CA_BUNDLE) works; one that does not is refused at once
(ConfigError, not a transient error to retry), and so is a private key others can read."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend, remote_from_env
from balsam.errors import BalsamError, ConfigError
from balsam.server.auth import AuthStore, Role
from launchkit import cli
from serverkit import self_signed, uvicorn_server


def test_https_with_a_trusted_self_signed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = init_site(tmp_path / "wf")
    cert, key = self_signed(tmp_path)
    auth = AuthStore.open(tmp_path / "state")
    token = auth.add_user("alice")
    auth.grant("alice", Role.VIEWER, "wf")
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with uvicorn_server([site.path], tmp_path / "state", args=args, verify=trust) as base:
        assert base.startswith("https://")
        monkeypatch.setenv("BALSAM_URL", f"{base}/db/wf")
        monkeypatch.setenv("BALSAM_TOKEN", token)
        monkeypatch.setenv("BALSAM_CA_BUNDLE", str(cert))
        trusted = remote_from_env()
        assert trusted is not None
        assert trusted.change_marker() == 0
        trusted.close()
        untrusted = RemoteBackend(f"{base}/db/wf", token)
        with pytest.raises(ConfigError, match="not trusted"):
            untrusted.change_marker()
        untrusted.close()
        plain = RemoteBackend(base.replace("https://", "http://") + "/db/wf", token, timeout=5)
        with pytest.raises(BalsamError):  # plain HTTP to the TLS port: never an answer
            plain.change_marker()
        plain.close()


def test_a_key_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = init_site(tmp_path / "wf")
    cert, key = self_signed(tmp_path)
    key.chmod(0o644)
    state = ["--state", str(tmp_path / "state")]
    cli(capsys, "server", "add-user", "alice", *state)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    code, _, err = cli(capsys, "server", "start", str(site.path), *tls, *state)
    assert code == 2 and "TLS key file" in err and "chmod 600" in err
    code, _, err = cli(capsys, "server", "start", str(site.path), "--tls-cert", str(cert), *state)
    assert code == 2 and "go together" in err
