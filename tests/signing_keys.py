"""The test process's federation signing key pair, made once by the real `make_signing_key`.

Fixtures that write checkpoints sign them with `signing_key()`; gateways started by the tests
verify them with `verify_key_file()`; runs get `signing_key_file()` as run-config `signing-key`.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrec_app.core.signing import load_signing_key
from fedrec_app.ops.certs import CertPaths, make_signing_key


@functools.cache
def _paths() -> CertPaths:
    folder = Path(tempfile.mkdtemp(prefix="fedrec-test-signing-"))
    atexit.register(shutil.rmtree, folder, True)
    return make_signing_key(folder)


def signing_key_file() -> Path:
    """federation-signing.key (0600): the run-config `signing-key` of test runs."""
    return _paths().signing_key


def verify_key_file() -> Path:
    """federation-signing.pub: the `--verify-key` of test gateways."""
    return _paths().signing_pub


@functools.cache
def signing_key() -> Ed25519PrivateKey:
    return load_signing_key(signing_key_file())
