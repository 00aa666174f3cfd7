"""`interest-tree serve` runs the service; `interest-tree demo` shows it end to end."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from server.config import Settings
from server.interceptors import RequestIdFilter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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
        }.items()
        if value is not None
    }
    if args.no_llm:
        overrides["embedded_llm"] = False
    return Settings(**overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interest-tree", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    settings = _settings(args)
    if args.command == "serve":
        from server.app import serve

        asyncio.run(serve(settings))
        return 0
    from server.demo import run_demo

    return asyncio.run(run_demo(settings))


if __name__ == "__main__":
    sys.exit(main())
