"""`interest-tree serve` runs the service; `interest-tree demo` shows it end to end."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter

from server.config import Settings
from server.config_file import config_template, load_settings
from server.interceptors import RequestIdFilter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# JSON lines carry these plus any `extra=` fields of the record (rpc_method, grpc_code, …).
JSON_LOG_FIELDS = ("levelname", "name", "request_id", "message")


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(
            list(JSON_LOG_FIELDS),
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    else:
        formatter = logging.Formatter(LOG_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "store_url": getattr(args, "store_url", None),
            "store_schema": getattr(args, "store_schema", None),
            "llm_url": args.llm_url,
            "llm_model": args.llm_model,
            "naming_mode": args.naming_mode,
            "http_port": getattr(args, "http_port", None),
            "http_host": getattr(args, "http_host", None),
            **{name: getattr(args, name, None) for name in _SECURITY_OPTIONS},
        }.items()
        if value is not None
    }
    for flag in ("require_auth", "insecure", "close_reflection"):
        if getattr(args, flag, False):
            overrides[flag] = True
    if args.no_llm:
        overrides["embedded_llm"] = False
    return load_settings(getattr(args, "config", None), **overrides)


_SECURITY_OPTIONS = {
    "tls_cert": (Path, "PEM certificate chain: TLS on the gRPC and HTTP ports"),
    "tls_key": (Path, "PEM private key of --tls-cert"),
    "tls_client_ca": (Path, "PEM CA: require client certificates it signed (mutual TLS)"),
    "rate_limit_per_s": (float, "requests per second per tenant (default: no limit)"),
    "rate_burst": (int, "token-bucket size of the rate limit (default: one second's worth)"),
    "max_items": (int, "items one tenant may hold (default: no cap)"),
    "max_events": (int, "events one tenant may hold (default: no cap)"),
    "max_users": (int, "users one tenant may hold (default: no cap)"),
    "oidc_issuer": (str, "also accept OIDC access tokens (JWTs) of this issuer"),
    "oidc_audience": (str, "the audience such tokens must name"),
    "oidc_jwks_file": (Path, "the issuer's signing keys (JWKS JSON), kept current by you"),
    "oidc_tenant_claim": (str, "the claim naming the tenant (default: tenant)"),
    "oidc_role_claim": (str, "the claim naming the role (default: role)"),
}


def _add_security_flags(command: argparse.ArgumentParser) -> None:
    for name, (kind, helptext) in _SECURITY_OPTIONS.items():
        command.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=helptext)
    command.add_argument(
        "--require-auth",
        action="store_true",
        help="every call needs an API key (authorization: Bearer <key>); see `keys create`",
    )
    command.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without --require-auth",
    )
    command.add_argument(
        "--close-reflection", action="store_true", help="server reflection needs a key too"
    )


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="print a new key (its last line)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", choices=["reader", "writer", "admin"], required=True)
    listing = actions.add_parser("list", help="key ids, tenants, roles, revocation")
    listing.add_argument("--tenant", default=None)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (or the key itself)")
    revoke.add_argument("key_id")
    for action in (create, listing, revoke):
        action.add_argument("--data-dir", type=Path, default=None)


def _keys(args: argparse.Namespace) -> int:
    from server.auth.keys import KeyStore, keys_path
    from server.auth.roles import Role

    data_dir = args.data_dir or Settings().data_dir
    store = KeyStore(keys_path(data_dir))
    try:
        if args.keys_command == "create":
            try:
                record, key = store.create(args.tenant, Role.parse(args.role))
            except ValueError as error:
                print(error, file=sys.stderr)
                return 2
            print(f"key id {record.key_id}, tenant {record.tenant}, role {record.role.label}")
            print("the key is shown only this once; store it as a secret:")
            print(key)
            return 0
        if args.keys_command == "list":
            for r in store.list(args.tenant):
                state = f"revoked {r.revoked_at}" if r.revoked else "active"
                print(f"{r.key_id}  {r.tenant}  {r.role.label}  created {r.created_at}  {state}")
            return 0
        if store.revoke(args.key_id):
            print(f"revoked {args.key_id[:24]}")
            return 0
        print(f"no active key {args.key_id[:24]!r}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interest-tree", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line, with the request id of the call",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("serve", "run the gRPC server"),
        ("demo", "start the server on the embedded default, load the shipped sample, show results"),
    ):
        command = commands.add_parser(name, help=helptext)
        command.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML file of settings (see `config-template`); flags and env override it",
        )
        command.add_argument("--host", default=None)
        command.add_argument("--port", type=int, default=None, help="0 picks a free port")
        command.add_argument("--data-dir", type=Path, default=None)
        command.add_argument(
            "--store-url",
            default=None,
            help="postgresql://… store shared by replicas (default: SQLite in --data-dir)",
        )
        command.add_argument(
            "--store-schema", default=None, help="PostgreSQL schema of the store (default: public)"
        )
        command.add_argument("--llm-url", default=None, help="OpenAI-compatible …/v1 of vLLM")
        command.add_argument("--llm-model", default=None)
        command.add_argument("--naming-mode", choices=["off", "choose", "free"], default=None)
        command.add_argument(
            "--no-llm", action="store_true", help="build trees from the data alone"
        )
        if name == "serve":
            command.add_argument(
                "--http-port",
                type=int,
                default=None,
                help="serve the review page and /metrics on this port (0 picks a free one)",
            )
            command.add_argument("--http-host", default=None, help="default: --host")
            _add_security_flags(command)
    batch = commands.add_parser(
        "build-trees", help="build many users' trees on a running server, with a progress bar"
    )
    batch.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server")
    batch.add_argument("users", nargs="*", help="user ids or users/{id} names")
    batch.add_argument("--all", action="store_true", help="every user with recorded events")
    batch.add_argument(
        "--api-key",
        default=os.environ.get("INTEREST_TREE_API_KEY"),
        help="a writer's key (default: $INTEREST_TREE_API_KEY), for a server with --require-auth",
    )
    batch.add_argument("--tls-ca", type=Path, default=None, help="PEM CA: connect over TLS")
    batch.add_argument(
        "--engine",
        choices=["server", "ray"],
        default="server",
        help="server: BatchBuildInterestTrees on --address; ray: Ray Data workers on the "
        "shared PostgreSQL store (server/ray_build.py)",
    )
    batch.add_argument("--ray-address", default=None, help="Ray cluster (default: a local one)")
    batch.add_argument("--ray-concurrency", type=int, default=2, help="Ray actors building")
    batch.add_argument("--ray-batch-size", type=int, default=16, help="users per Ray batch")
    batch.add_argument("--config", type=Path, default=None, help="TOML config file (ray)")
    batch.add_argument("--store-url", default=None, help="postgresql://… (ray)")
    batch.add_argument("--store-schema", default=None)
    batch.add_argument("--llm-url", default=None, help="OpenAI-compatible endpoint (ray)")
    batch.add_argument("--llm-model", default=None)
    batch.add_argument("--naming-mode", choices=["off", "choose", "free"], default=None)
    batch.add_argument("--no-llm", action="store_true", help="build data trees (ray)")
    _add_keys_commands(commands)
    from server.exporter import add_export_command
    from server.importer import add_import_command

    add_import_command(commands)
    add_export_command(commands)
    commands.add_parser(
        "config-template", help="print a TOML config file listing every setting and its default"
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("interest-tree")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _build_trees_on_ray(args: argparse.Namespace) -> int:
    from server.ray_build import run_build_trees

    overrides = {
        key: value
        for key, value in {
            "store_url": args.store_url,
            "store_schema": args.store_schema,
            "llm_url": args.llm_url,
            "llm_model": args.llm_model,
            "naming_mode": args.naming_mode,
        }.items()
        if value is not None
    }
    if args.no_llm:
        overrides["embedded_llm"] = False
        overrides["naming_mode"] = "off"
    try:
        settings = load_settings(args.config, **overrides)
    except (FileNotFoundError, ValidationError) as error:
        print(f"interest-tree: {error}", file=sys.stderr)
        return 2
    return run_build_trees(
        settings,
        args.users,
        ray_address=args.ray_address,
        concurrency=args.ray_concurrency,
        batch_size=args.ray_batch_size,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command == "keys":
        return _keys(args)
    if args.command == "config-template":
        print(config_template(), end="")
        return 0
    if args.command == "import":
        from server.importer import import_main

        return import_main(args)
    if args.command == "export":
        from server.exporter import export_main

        return export_main(args)
    if args.command == "build-trees":
        from server.batch_cli import build_trees

        if not args.users and not args.all:
            _parser().error("build-trees needs user ids or --all")
        if args.engine == "ray":
            return _build_trees_on_ray(args)
        import grpc

        try:
            failed = asyncio.run(
                build_trees(
                    args.address,
                    args.users,
                    all_users=args.all,
                    api_key=args.api_key,
                    tls_ca=args.tls_ca.read_bytes() if args.tls_ca else None,
                )
            )
        except grpc.aio.AioRpcError as error:
            print(f"interest-tree: {error.code().name}: {error.details()}", file=sys.stderr)
            return 2
        return 1 if failed else 0
    try:
        settings = _settings(args)
    except (FileNotFoundError, ValidationError) as error:
        print(f"interest-tree: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from server.app import ExposureError, serve

        try:
            asyncio.run(serve(settings))
        except ExposureError as error:
            print(f"interest-tree: {error}", file=sys.stderr)
            return 2
        return 0
    from server.demo import run_demo

    return asyncio.run(run_demo(settings))


if __name__ == "__main__":
    sys.exit(main())
