"""The framework's own floor: a minimal FastAPI app served the way `fatigue api` serves ours.

    python -m bench.api_floor --port P

One async route with the decision's path and query parameters, no dependency, no I/O, a small
pydantic response — under uvicorn with uvloop and httptools when they are installed (as
`ingest.app.main` runs the API). Section 4 loads it like the decision API: what FastAPI, uvicorn and
the HTTP round trip cost per request on this machine before any of our work.
"""

from __future__ import annotations

import argparse
import importlib.util

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class FloorOut(BaseModel):
    customer_id: str
    channel: str
    kind: str | None
    decision: str


def make_app() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/v1/customers/{customer_id}/decision", response_model=FloorOut)
    async def decision(customer_id: str, channel: str, kind: str | None = None) -> FloorOut:
        return FloorOut(customer_id=customer_id, channel=channel, kind=kind, decision="allow")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop=loop,
                http=http)


if __name__ == "__main__":
    main()
