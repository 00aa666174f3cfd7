"""`interest-tree serve` runs the service; `interest-tree demo` shows it end to end."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from server.config import Settings
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
            "llm_url": args.llm_url,
            "llm_model": args.llm_model,
            "naming_mode": args.naming_mode,
            "http_port": getattr(args, "http_port", None),
            "http_host": getattr(args, "http_host", None),
        }.items()
        if value is not None
    }
    if args.no_llm:
        overrides["embedded_llm"] = False
    return Settings(**overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interest-tree", description=__doc__)
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
        command.add_argument("--host", default=None)
        command.add_argument("--port", type=int, default=None, help="0 picks a free port")
        command.add_argument("--data-dir", type=Path, default=None)
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
    batch = commands.add_parser(
        "build-trees", help="build many users' trees on a running server, with a progress bar"
    )
    batch.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server")
    batch.add_argument("users", nargs="*", help="user ids or users/{id} names")
    batch.add_argument("--all", action="store_true", help="every user with recorded events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command == "build-trees":
        from server.batch_cli import build_trees

        if not args.users and not args.all:
            _parser().error("build-trees needs user ids or --all")
        return 1 if asyncio.run(build_trees(args.address, args.users, all_users=args.all)) else 0
    settings = _settings(args)
    if args.command == "serve":
        from server.app import serve

        asyncio.run(serve(settings))
        return 0
    from server.demo import run_demo

    return asyncio.run(run_demo(settings))


if __name__ == "__main__":
    sys.exit(main())
