"""Key lists: an unsigned candidate list crashes ``models keys install`` before any signature check.

``replace_key_list`` promises ConfigError for anything it refuses, and the parse rule promises a
bounded refusal of untrusted JSON. A list whose ``expires`` is an integer too large for a float
(valid JSON, no signature needed) raises OverflowError instead: the command exits with a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamedge.contracts.keys import make_key_list, replace_key_list, write_key_list
from streamedge.errors import ConfigError


def test_a_list_with_an_expiry_too_large_for_a_float_is_refused_as_config_error(tmp_path: Path) -> None:
    root, signer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    installed = tmp_path / "installed.json"
    write_key_list(make_key_list(root, [signer.public_key()], 1, time.time() + 86400), installed)
    body = json.loads(installed.read_bytes())
    body["signed"].update(version=2, expires=10**400)  # unsigned edit: the signature no longer matches
    candidate = tmp_path / "new.json"
    candidate.write_text(json.dumps(body))
    with pytest.raises(ConfigError):
        replace_key_list(candidate, installed)
