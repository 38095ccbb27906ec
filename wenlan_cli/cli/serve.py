"""`wenlan serve`: image search over an index as a local web service and page."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    index: Annotated[Path, Opt("--index", help="Index folder made by `wenlan index`.")] = ...,
    host: Annotated[str, Opt(help="Address to listen on; the default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port.")] = 8000,
    token: Annotated[Optional[str], Opt("--token", envvar="WENLAN_SERVE_TOKEN", show_default=False,
                                        help="Require `Authorization: Bearer TOKEN` (also from $WENLAN_SERVE_TOKEN).")] = None,
    checkpoint: Annotated[Optional[str], Opt(help="Encode queries with this checkpoint instead of the index's own.")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_query_chars: Annotated[int, Opt(help="Longest text query accepted.")] = 200,
    max_k: Annotated[int, Opt(help="Most results one query may ask for.")] = 100,
    max_upload_mb: Annotated[float, Opt(help="Largest image upload accepted, in MB.")] = 8.0,
    reload_interval: Annotated[float, Opt(help="Seconds between checks for an updated index (0: never reload).")] = 2.0,
    batch_size: Annotated[int, Opt(help="Most queries encoded together.")] = 32,
    batch_wait_ms: Annotated[float, Opt(help="How long a batch waits for more queries, in ms.")] = 2.0,
    access_log: Annotated[bool, Opt("--access-log/--no-access-log", help="Log every request.")] = True,
) -> None:
    """Serve image search over an index (web page, JSON API).

    Serves INDEX: a page at / and a JSON API (/search, /search/image,
    /images/ID, /healthz). The index is reloaded when `wenlan index` updates it."""
    from ..errors import UsageError

    for name, value, low in (("--port", port, 0), ("--max-query-chars", max_query_chars, 1), ("--max-k", max_k, 1),
                             ("--batch-size", batch_size, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, not {value}.")
    if port > 65535:
        raise UsageError(f"--port must be at most 65535, not {port}.")
    if max_upload_mb <= 0 or reload_interval < 0 or batch_wait_ms < 0:
        raise UsageError("--max-upload-mb must be positive, and --reload-interval and --batch-wait-ms not negative.")
    if token is not None and not token.strip():
        raise UsageError("--token is empty; give a secret, or leave --token out.")
    try:
        import uvicorn

        from ..serve import ServeSettings, create_app
    except ImportError as exc:
        raise UsageError(f"wenlan serve needs the serve extra ({exc.name} is missing): pip install 'wenlan[serve]'.") from None
    from rich.console import Console

    err = Console(stderr=True)
    settings = ServeSettings(
        index=index, checkpoint=checkpoint, device=device, token=token, max_query_chars=max_query_chars,
        max_k=max_k, default_k=min(20, max_k), max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        reload_interval=reload_interval, batch_size=batch_size, batch_wait=batch_wait_ms / 1000,
    )
    app = create_app(settings)
    snapshot = app.state.live.current
    for warning in snapshot.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if not _is_loopback(host) and token is None:
        err.print(f"warning: listening on {host} without --token: anyone who can reach this address can search "
                  "the index and see its images.", markup=False, highlight=False)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"Serving {len(snapshot.index)} images of {index} at http://{shown}:{port}/", markup=False, highlight=False)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
