"""`fedrec certs` / `fedrec keys`: SANs, key modes, refusal to overwrite, chain, real TLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.certs import (
    certificate_sans,
    issue_server_cert,
    make_certs,
    make_node_keys,
    renew_server_cert,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrec_app", *args], capture_output=True, text=True, check=False
    )


def test_certs_cli_sans_modes_and_chain(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = _fedrec("certs", "--out", str(out), "--san", "10.77.0.1", "--san", "link.example")
    assert result.returncode == 0, result.stderr
    assert set(certificate_sans(out / "server.pem")) == {
        "10.77.0.1",
        "link.example",
        "localhost",
        "127.0.0.1",
        "::1",
    }
    assert _mode(out / "ca.key") == 0o600
    assert _mode(out / "server.key") == 0o600
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in sans.get_values_for_type(x509.IPAddress)


def test_certs_refuse_to_overwrite_unless_forced(tmp_path: Path) -> None:
    paths = make_certs(tmp_path)
    before = paths.ca_cert.read_bytes()
    with pytest.raises(FedrecError, match="refusing to overwrite .*ca.crt"):
        make_certs(tmp_path)
    result = _fedrec("certs", "--out", str(tmp_path))
    assert result.returncode == 2 and "--force" in result.stderr
    assert paths.ca_cert.read_bytes() == before
    make_certs(tmp_path, force=True)
    assert paths.ca_cert.read_bytes() != before


@pytest.mark.parametrize("bad", ["not a host", "-bad-.example", "IP:10.0.0.300", ""])
def test_certs_reject_bad_san_before_writing(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FedrecError, match="--san"):
        make_certs(tmp_path / "c", [bad])
    assert not (tmp_path / "c").exists()


def _tls_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=name) as tls,
            ):
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(5)


def test_server_certificate_passes_real_tls_verification(tmp_path: Path) -> None:
    paths = make_certs(tmp_path / "a")
    other = make_certs(tmp_path / "b")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.server_cert, paths.server_key)
    for name in ("localhost", "127.0.0.1"):
        _tls_handshake(server_ctx, ssl.create_default_context(cafile=paths.ca_cert), name)
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(server_ctx, ssl.create_default_context(cafile=other.ca_cert), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _tls_handshake(server_ctx, ssl.create_default_context(cafile=paths.ca_cert), "10.9.9.9")


def test_keys_are_openssh_p384_private_0600(tmp_path: Path) -> None:
    result = _fedrec("keys", "--out", str(tmp_path), "sn1", "sn2")
    assert result.returncode == 0, result.stderr
    for name in ("sn1", "sn2"):
        private = load_ssh_private_key((tmp_path / name).read_bytes(), password=None)
        public = load_ssh_public_key((tmp_path / f"{name}.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
        assert _mode(tmp_path / name) == 0o600
        assert (tmp_path / f"{name}.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def test_keys_refuse_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    (first,) = make_node_keys(tmp_path, ["sn1"])
    before = first.private.read_bytes()
    with pytest.raises(FedrecError, match="refusing to overwrite .*sn1"):
        make_node_keys(tmp_path, ["sn2", "sn1"])
    assert first.private.read_bytes() == before
    assert not (tmp_path / "sn2").exists()  # nothing half-written
    for bad in (["../evil"], ["a", "a"], []):
        with pytest.raises(FedrecError):
            make_node_keys(tmp_path, bad)


def test_issue_server_cert_signs_with_the_existing_ca(tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="run `fedrec certs` first"):
        issue_server_cert(tmp_path, "gateway", ["10.77.0.6"])
    paths = make_certs(tmp_path)
    result = _fedrec("certs", "--out", str(tmp_path), "--name", "gateway", "--san", "10.77.0.6")
    assert result.returncode == 0, result.stderr
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    gateway = x509.load_pem_x509_certificate((tmp_path / "gateway.pem").read_bytes())
    gateway.verify_directly_issued_by(ca)
    assert "10.77.0.6" in certificate_sans(tmp_path / "gateway.pem")
    assert _mode(tmp_path / "gateway.key") == 0o600
    with pytest.raises(FedrecError, match="refusing to overwrite"):
        issue_server_cert(tmp_path, "gateway")
    with pytest.raises(FedrecError, match="--name"):
        issue_server_cert(tmp_path, "ca")


def test_certs_write_a_signing_key_pair_and_keep_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    paths = make_certs(tmp_path)
    assert _mode(paths.signing_key) == 0o600
    private = load_pem_private_key(paths.signing_key.read_bytes(), password=None)
    public = load_pem_public_key(paths.signing_pub.read_bytes())
    public.verify(private.sign(b"manifest"), b"manifest")  # the two halves belong together
    before = paths.signing_key.read_bytes()
    make_certs(tmp_path, force=True)  # a new CA; the checkpoint-signing pair is kept
    assert paths.signing_key.read_bytes() == before
    result = _fedrec("certs", "--signing-key", "--out", str(tmp_path))
    assert result.returncode == 2 and "--force" in result.stderr
    assert paths.signing_key.read_bytes() == before
    result = _fedrec("certs", "--signing-key", "--force", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert paths.signing_key.read_bytes() != before
    assert str(paths.signing_pub) in result.stdout


def test_half_a_signing_pair_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    from fedrec_app.ops.certs import ensure_signing_key

    assert ensure_signing_key(tmp_path) is True
    assert ensure_signing_key(tmp_path) is False
    (tmp_path / "federation-signing.pub").unlink()
    with pytest.raises(FedrecError, match="federation-signing.key exists but .*pub does not"):
        make_certs(tmp_path)
    assert not (tmp_path / "ca.crt").exists()
    ensure_signing_key(tmp_path / "other")
    (tmp_path / "other" / "federation-signing.pub").rename(tmp_path / "federation-signing.pub")
    with pytest.raises(FedrecError, match="is not the public half"):
        ensure_signing_key(tmp_path)


def test_renew_server_keeps_the_ca_and_refuses_without_its_key(tmp_path: Path) -> None:
    paths = make_certs(tmp_path, ["10.77.0.1"])
    ca_before, key_before = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    old_server = paths.server_cert.read_bytes()
    refused = _fedrec("certs", "--out", str(tmp_path), "--san", "10.77.0.9")
    assert refused.returncode == 2 and "--renew-server" in refused.stderr
    result = _fedrec(
        "certs",
        "--out",
        str(tmp_path),
        "--renew-server",
        "--san",
        "10.77.0.9",
        "--san",
        "link.example",
    )
    assert result.returncode == 0, result.stderr
    assert paths.ca_cert.read_bytes() == ca_before and paths.ca_key.read_bytes() == key_before
    assert paths.server_cert.read_bytes() != old_server
    assert set(certificate_sans(paths.server_cert)) == {
        "10.77.0.9",
        "link.example",
        "localhost",
        "127.0.0.1",
        "::1",
    }
    assert _mode(paths.server_key) == 0o600
    ca = x509.load_pem_x509_certificate(ca_before)
    x509.load_pem_x509_certificate(paths.server_cert.read_bytes()).verify_directly_issued_by(ca)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # a node's old ca.crt still trusts it
    server_ctx.load_cert_chain(paths.server_cert, paths.server_key)
    _tls_handshake(server_ctx, ssl.create_default_context(cafile=paths.ca_cert), "link.example")
    assert _fedrec("certs", "--out", str(tmp_path), "--renew-server", "--force").returncode == 2
    renew_server_cert(tmp_path)  # no --san: the current SANs are kept (renewal before expiry)
    assert set(certificate_sans(paths.server_cert)) == {
        "10.77.0.9",
        "link.example",
        "localhost",
        "127.0.0.1",
        "::1",
    }
    paths.ca_key.unlink()  # a host without the CA's key: refused, nothing written
    renewed = paths.server_cert.read_bytes()
    with pytest.raises(FedrecError, match=r"without the CA: .*ca\.key missing"):
        renew_server_cert(tmp_path, ["10.77.0.9"])
    assert paths.server_cert.read_bytes() == renewed
