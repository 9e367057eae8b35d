"""Run the fake OpenRouter: ``python -m tests.fake_openrouter --host 0.0.0.0 --port 8080``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn

from tests.fake_openrouter.app import FakeState, create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openrouter", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--catalog", type=Path, help='JSON file in /api/v1/models shape: {"data": [...]}')
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--cancel-billing", choices=["full", "partial"], default="full",
                        help="what a stream cancelled by the client bills (POST /_fake/settings changes it)")
    args = parser.parse_args(argv)
    state = FakeState(cancel_billing=args.cancel_billing)
    if args.catalog is not None:
        state.catalog = json.loads(args.catalog.read_text())["data"]
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
