"""The federation's checkpoint signature: Ed25519 over the exact bytes of a checkpoint manifest.

The ServerApp holds the private key (``signing-key``, PKCS#8 PEM, 0600 on the SuperLink host);
the gateway holds only the public key (``--verify-key``, PEM). A signature file is JSON::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64, 64 bytes>"}

``key_id`` (the start of the sha256 of the raw public key) is a hint for error messages only:
what counts is that the signature verifies against the configured public key.
``cryptography`` only: the gateway imports this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrec_app.core.errors import FedrecError

ALGORITHM = "ed25519"


class SignatureError(FedrecError):
    """A signature is missing, malformed, or does not verify against the expected key."""


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (the file is protected by 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of sha256(raw key)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``; FedrecError naming the file otherwise."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FedrecError(f"{path}: no such signing key (make one with `fedrec certs`)") from None
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read the signing key: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise FedrecError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FedrecError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``; FedrecError naming the file otherwise."""
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise FedrecError(
            f"{path}: no such public key (copy the federation's federation-signing.pub here)"
        ) from None
    except OSError as exc:
        raise FedrecError(f"{path}: cannot read the public key: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise FedrecError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise FedrecError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The signature file's bytes for ``data``."""
    record = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    return (json.dumps(record, sort_keys=True) + "\n").encode("ascii")


def verify(key: Ed25519PublicKey, data: bytes, signature_file: bytes, where: str) -> None:
    """Raise SignatureError naming ``where`` unless ``signature_file`` signs ``data`` by ``key``."""
    try:
        record = json.loads(signature_file)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        algorithm, encoded = record.get("algorithm"), record.get("signature")
        if algorithm != ALGORITHM:
            raise ValueError(f"algorithm {algorithm!r} is not {ALGORITHM!r}")
        if not isinstance(encoded, str):
            raise ValueError("no 'signature' string")
        signature = base64.b64decode(encoded, validate=True)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise SignatureError(f"{where}: malformed signature file ({exc})") from None
    try:
        key.verify(signature, data)
    except InvalidSignature:
        named = record.get("key_id")
        expected = key_id(key)
        hint = (
            f"it names key {named}, the verify key is {expected}: signed with another key"
            if isinstance(named, str) and named != expected
            else f"verify key {expected}: forged or altered after signing"
        )
        raise SignatureError(f"{where}: signature does not verify ({hint})") from None
