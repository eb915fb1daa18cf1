"""``streamedge models keys ...``: the signed list of trusted model-signing keys (init, rotate, install, show).

The root key (``models keygen``, kept offline) signs the list; subscribers are given the list
file as their ``--public-key`` (see :mod:`streamedge.contracts.keys`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from streamedge.cli.options import option

__all__ = ["register_keys"]

_DAY_S = 86400.0


def register_keys(commands: Any) -> None:
    """Add ``models keys`` with its actions."""
    parser = commands.add_parser("keys", help="the signed list of trusted model-signing keys (rotation, revocation)")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="write version 1 of a trusted-key list, signed by the root key")
    _list_options(init)
    init.add_argument("--add", type=Path, action="append", required=True, metavar="PUBLIC_PEM",
                      help="a model-signing public key to trust (repeat)")
    init.set_defaults(handler=_init)

    rotate = actions.add_parser("rotate", help="write the next version: add keys, revoke keys, renew the expiry")
    _list_options(rotate)
    rotate.add_argument("--add", type=Path, action="append", default=[], metavar="PUBLIC_PEM",
                        help="a model-signing public key to start trusting (repeat)")
    rotate.add_argument("--revoke", action="append", default=[], metavar="KEY_ID",
                        help="a key id to remove: every record it signed is refused from then on (repeat)")
    rotate.add_argument("--new-root-key", type=Path, default=None,
                        help="rotate the root too: the list is signed by the old and this new root key")
    rotate.set_defaults(handler=_rotate)

    install = actions.add_parser("install", help="replace an installed list by a newer one its root signed")
    install.add_argument("new", type=Path, help="the new list")
    option(install, "--keys", type=Path, required=True, help="the installed list (a subscriber's --public-key)")
    install.set_defaults(handler=_install)

    show = actions.add_parser("show", help="verify a list with its root and print its version, expiry and key ids")
    show.add_argument("keys", type=Path)
    show.set_defaults(handler=_show)


def _list_options(parser: argparse.ArgumentParser) -> None:
    option(parser, "--root-key", type=Path, required=True, help="the root's Ed25519 private key (PEM)")
    option(parser, "--keys", type=Path, required=True, help="the list file to write (rotate: also read)")
    option(parser, "--expires-days", type=float, default=365.0, help="days until the list expires")


def _init(args: argparse.Namespace) -> int:
    from streamedge.contracts.keys import make_key_list, write_key_list
    from streamedge.contracts.signing import load_private_key
    from streamedge.errors import ConfigError

    if args.keys.exists():
        raise ConfigError(f"{args.keys} exists: use 'models keys rotate'")
    keys = [_public(path) for path in args.add]
    key_list = make_key_list(load_private_key(args.root_key), keys, 1, time.time() + args.expires_days * _DAY_S)
    write_key_list(key_list, args.keys)
    print(f"wrote {args.keys}: version 1, keys {', '.join(sorted(key_list.keys))}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from streamedge.contracts.keys import make_key_list, read_key_list, write_key_list
    from streamedge.contracts.signing import load_private_key
    from streamedge.errors import ConfigError

    current = read_key_list(args.keys)
    unknown = sorted(set(args.revoke) - current.keys.keys())
    if unknown:
        raise ConfigError(f"cannot revoke {', '.join(unknown)}: not in {args.keys}")
    trusted = current.trusted().keys
    keys = [key for kid, key in trusted.items() if kid not in args.revoke] + [_public(p) for p in args.add]
    if not keys:
        raise ConfigError("the new list would trust no key")
    root = load_private_key(args.root_key)
    new_root = load_private_key(args.new_root_key) if args.new_root_key else None
    key_list = make_key_list(root, keys, current.version + 1, time.time() + args.expires_days * _DAY_S, new_root)
    key_list.verify(current.root)
    write_key_list(key_list, args.keys)
    print(f"wrote {args.keys}: version {key_list.version}, keys {', '.join(sorted(key_list.keys))}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from streamedge.contracts.keys import replace_key_list

    key_list = replace_key_list(args.new, args.keys)
    print(f"installed {args.new} as {args.keys}: version {key_list.version}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from streamedge.contracts.keys import read_key_list

    key_list = read_key_list(args.keys)
    state = "EXPIRED" if time.time() >= key_list.expires else "valid"
    print(f"version {key_list.version}, {state} until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(key_list.expires))}")
    print(f"root: {', '.join(sorted(key_list.root))}")
    print(f"keys: {', '.join(sorted(key_list.keys))}")
    return 0


def _public(path: Path) -> Any:
    from streamedge.contracts.keys import TrustedKeys, load_trust_anchor
    from streamedge.errors import ConfigError

    key = load_trust_anchor(path)
    if isinstance(key, TrustedKeys):
        raise ConfigError(f"{path} is a key list, not a public key")
    return key
