"""``streamedge models ...``: the model registry (add, list, show, promote, rollback, refresh, announce, verify,
keygen, keys, serve, watch-canary)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamedge.cli.canary_cmd import register_watch
from streamedge.cli.common import add_kafka_options, kafka_settings, topic_layout
from streamedge.cli.keys_cmd import register_keys
from streamedge.cli.options import option
from streamedge.paths import user_state_dir

__all__ = ["register"]


def _registry_option(parser: argparse.ArgumentParser) -> None:
    option(parser, "--registry", type=Path, default=user_state_dir() / "registry",
           help="model registry folder; default under STREAMEDGE_HOME")


def _version_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``NAME VERSION`` like ``promote``; the old ``--version N`` still works, with a note."""
    parser.add_argument("version", type=int, nargs="?", default=None, help=f"version ({default})")
    parser.add_argument("--version", dest="version_flag", type=int, default=None, help=argparse.SUPPRESS)


def _version(args: argparse.Namespace) -> int | None:
    import sys

    from streamedge.errors import ConfigError

    if args.version_flag is None:
        return args.version  # type: ignore[no-any-return]
    if args.version is not None:
        raise ConfigError("give the version once: models show|verify NAME VERSION")
    print(f"note: --version is deprecated; write 'streamedge models {args.models_command} {args.name} "
          f"{args.version_flag}'", file=sys.stderr)
    return args.version_flag  # type: ignore[no-any-return]


def register(subparsers: Any) -> None:
    """Add the ``models`` command group."""
    parser = subparsers.add_parser("models", help="versioned, signed model registry")
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    keygen = commands.add_parser("keygen", help="create an Ed25519 signing key pair")
    option(keygen, "--signing-key", type=Path, required=True, help="private key to write (PEM, mode 0600)")
    option(keygen, "--public-key", type=Path, required=True, help="public key to write (PEM)")
    keygen.set_defaults(handler=_keygen)

    add = commands.add_parser("add", help="store an exported model folder as the next version, signed")
    add.add_argument("source", type=Path, help="folder with manifest.json and the model file (a trainer's --out)")
    _registry_option(add)
    option(add, "--signing-key", type=Path, required=True, help="Ed25519 private key (PEM)")
    add.set_defaults(handler=_add)

    listing = commands.add_parser("list", help="model names, versions and the active one")
    _registry_option(listing)
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="print one version's manifest")
    show.add_argument("name")
    _version_arguments(show, "default: active, else latest")
    _registry_option(show)
    show.set_defaults(handler=_show)

    verify = commands.add_parser("verify", help="check manifest, signature and sha256; exit 1 with the reason")
    verify.add_argument("name")
    _version_arguments(verify, "default: every version")
    _registry_option(verify)
    option(verify, "--public-key", type=Path, required=True, help="trusted Ed25519 public key (PEM) or trusted-key list")
    verify.set_defaults(handler=_verify)

    for name, handler, text in (
        ("promote", _promote, "make a version active and publish it to the model-updates topic"),
        ("rollback", _rollback, "return to the previously promoted version and publish it"),
        ("refresh", _refresh, "re-issue the current record with a new expiry (before --record-ttl runs out) "
                              "and publish it"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("name")
        if name == "promote":
            sub.add_argument("version", type=int)
            # Flags only, never from an env var or the config file: a leftover setting must not
            # turn every later promotion into a staged one.
            staged = sub.add_mutually_exclusive_group()
            staged.add_argument("--to", dest="to_group", default=None, metavar="GROUP",
                                help="promote to the devices of this group only (edge --group); the others keep "
                                     "the fleet version [flag only: no env var]")
            staged.add_argument("--canary", default=None, metavar="PCT",
                                help="promote to a stable share of the fleet (e.g. 10%%: devices whose hash of "
                                     "model and device id falls in 0..PCT-1 of 0..99); the others keep the fleet "
                                     "version [flag only: no env var]")
        _registry_option(sub)
        option(sub, "--public-key", type=Path, required=True, help="trusted Ed25519 public key (PEM) or trusted-key list")
        option(sub, "--signing-key", type=Path, required=True,
               help="Ed25519 private key (PEM) that signs the promotion record")
        option(sub, "--serve-url", env="STREAMEDGE_MODELS_SERVE_URL", default=None,
               help="base URL of 'streamedge models serve' (e.g. https://registry:8765); default: a file:// URI")
        option(sub, "--no-inline", action="store_true",
               help="never carry the model inside the message (default: inline when under 512 KiB)")
        option(sub, "--no-publish", action="store_true", help="update the registry only, publish nothing")
        option(sub, "--record-ttl", type=float, default=None,
               help="seconds the issued record is valid: a device that sees nothing newer by then reports a "
                    "withheld update (run 'models refresh' before); default: no expiry")
        add_kafka_options(sub)
        sub.set_defaults(handler=handler)

    text = ("publish the current signed promotion record of NAME again (e.g. after a rollback whose "
            "publish failed); issues no new record")
    announce = commands.add_parser("announce", help=text, description=text)
    announce.add_argument("name")
    _registry_option(announce)
    option(announce, "--public-key", type=Path, required=True, help="trusted Ed25519 public key (PEM) or trusted-key list")
    option(announce, "--serve-url", env="STREAMEDGE_MODELS_SERVE_URL", default=None,
           help="base URL of 'streamedge models serve' (e.g. https://registry:8765); default: a file:// URI")
    option(announce, "--no-inline", action="store_true",
           help="never carry the model inside the message (default: inline when under 512 KiB)")
    add_kafka_options(announce)
    announce.set_defaults(handler=_announce, no_publish=False)

    register_watch(commands)
    register_keys(commands)

    serve = commands.add_parser("serve", help="serve the registry's artefacts over HTTP(S) (range requests, ETag)")
    _registry_option(serve)
    option(serve, "--host", default="127.0.0.1", help="address to bind")
    option(serve, "--port", type=int, default=8765, help="port to bind")
    option(serve, "--token-file", type=Path, default=None,
           help="file holding the bearer token clients must send (required unless --insecure)")
    option(serve, "--tls-cert", type=Path, default=None, help="PEM certificate chain: serve HTTPS (required unless "
                                                              "--insecure)")
    option(serve, "--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    serve.add_argument("--insecure", action="store_true",
                       help="serve without a token or over plain HTTP (loopback demos and tests only)")
    serve.set_defaults(handler=_serve)


def _registry(args: argparse.Namespace) -> Any:
    from streamedge.registry import ModelRegistry

    return ModelRegistry(args.registry, record_ttl_s=getattr(args, "record_ttl", None))


def _keygen(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import generate_keypair

    generate_keypair(args.signing_key, args.public_key)
    print(f"wrote {args.signing_key} (keep secret) and {args.public_key} (give to workers and devices)")
    return 0


def _add(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import load_private_key

    manifest = _registry(args).add(args.source, load_private_key(args.signing_key))
    print(f"added {manifest.name} v{manifest.version} ({manifest.quantization}, sha256 {manifest.sha256[:12]})")
    return 0


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    names = registry.names()
    if not names:
        print(f"no models in {args.registry}")
    for name in names:
        active = registry.active_version(name)
        versions = ", ".join(f"{v}*" if v == active else str(v) for v in registry.versions(name))
        print(f"{name}: {versions}   (* active)")
    return 0


def _pick_version(registry: Any, name: str, version: int | None) -> int:
    if version is not None:
        return version
    active = registry.active_version(name)
    if active is not None:
        return int(active)
    versions = registry.versions(name)
    if not versions:
        from streamedge.registry import RegistryError

        raise RegistryError(f"no model named {name!r} in {registry.root}")
    return int(versions[-1])


def _show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    manifest = registry.manifest(args.name, _pick_version(registry, args.name, _version(args)))
    print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import load_public_key
    from streamedge.errors import StreamedgeError

    registry = _registry(args)
    key = load_public_key(args.public_key)
    version = _version(args)
    versions = [version] if version is not None else registry.versions(args.name)
    if not versions:
        print(f"streamedge: error: no model named {args.name!r} in {args.registry}")
        return 1
    failed = 0
    for version in versions:
        try:
            registry.verify(args.name, version, key)
            print(f"{args.name} v{version}: ok")
        except StreamedgeError as exc:
            failed += 1
            print(f"{args.name} v{version}: FAILED: {exc}")
    return 1 if failed else 0


def _publish(args: argparse.Namespace, update: Any) -> None:
    from streamedge.kafka.model_updates import publish_model_update

    _registry(args).verify(update.name, update.version, _load_key(args))
    if args.no_publish:
        print(f"{update.name} v{update.version} is active (not published)")
        return
    publish_model_update(kafka_settings(args), topic_layout(args), update)
    record = update.promotion
    state = (f"is staged to {record.target}, the fleet keeps v{record.fleet_serving}"
             if record is not None and record.partial else "is active")
    print(f"{update.name} v{update.version} {state} (record #{record.sequence if record else '-'}, "
          f"{'inline' if update.inline is not None else update.uri}); published to {topic_layout(args).model_updates}")


def _promote(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import load_private_key

    registry = _registry(args)
    registry.verify(args.name, args.version, _load_key(args))
    from streamedge.errors import ConfigError

    if args.to_group is not None and args.canary is not None:
        raise ConfigError("--to and --canary exclude each other")
    for flag, value in (("--to", args.to_group), ("--canary", args.canary)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} needs a value (a group name / a share such as 10%); "
                              "leave the flag out to promote to the whole fleet")
    target = (f"group:{args.to_group}" if args.to_group is not None else
              f"canary:{args.canary.removesuffix('%')}" if args.canary is not None else None)
    _publish(args, registry.promote(args.name, args.version, load_private_key(args.signing_key),
                                    base_url=args.serve_url, inline=not args.no_inline, target=target))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import load_private_key

    _publish(args, _registry(args).rollback(args.name, load_private_key(args.signing_key),
                                            base_url=args.serve_url, inline=not args.no_inline))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from streamedge.contracts.signing import load_private_key

    _publish(args, _registry(args).refresh(args.name, load_private_key(args.signing_key),
                                           base_url=args.serve_url, inline=not args.no_inline))
    return 0


def _announce(args: argparse.Namespace) -> int:
    _publish(args, _registry(args).announcement(args.name, base_url=args.serve_url, inline=not args.no_inline))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from streamedge.errors import ConfigError
    from streamedge.registry_server import RegistryServer

    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc}") from exc
        if not token:
            raise ConfigError(f"--token-file {args.token_file} is empty")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    server = RegistryServer(_registry(args), args.host, args.port, token, args.tls_cert, args.tls_key,
                            insecure=args.insecure)
    print(f"serving {args.registry} at {server.url}/models/ (token {'required' if token else 'not required'})",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _load_key(args: argparse.Namespace) -> Any:
    from streamedge.contracts.signing import load_public_key

    return load_public_key(args.public_key)
