"""`wenlan serve`: image search over an index as a local web service and page."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, option


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """The options of `wenlan serve` (and the keys of its `--config` file)."""

    index: Path = option(help="Index folder made by `wenlan index`.", flags=("--index",))
    host: str = option("127.0.0.1", help="Address to listen on; the default answers this machine only.")
    port: int = option(8000, help="TCP port.")
    token: str | None = option(None, "--token", envvar="WENLAN_SERVE_TOKEN",
                               help="Require `Authorization: Bearer TOKEN` (also from $WENLAN_SERVE_TOKEN).")
    checkpoint: str | None = option(None, help="Encode queries with this checkpoint instead of the index's own.")
    device: str = device_option()
    max_query_chars: int = option(200, help="Longest text query accepted.")
    max_k: int = option(100, help="Most results one query may ask for.")
    max_upload_mb: float = option(8.0, help="Largest image upload accepted, in MB.")
    reload_interval: float = option(2.0, help="Seconds between checks for an updated index (0: never reload).")
    batch_size: int = option(32, help="Most queries encoded together.")
    batch_wait_ms: float = option(2.0, help="How long a batch waits for more queries, in ms.")
    access_log: bool = option(True, "--access-log/--no-access-log", help="Log every request.")


def _serve(call: Invocation, cfg: ServeConfig) -> None:
    """Serve image search over an index (web page, JSON API).

    Serves INDEX: a page at / and a JSON API (/search, /search/image,
    /images/ID, /healthz). The index is reloaded when `wenlan index` updates it."""
    from ..errors import UsageError

    index, host, port, token, max_k, batch_size = cfg.index, cfg.host, cfg.port, cfg.token, cfg.max_k, cfg.batch_size
    max_query_chars, max_upload_mb, reload_interval, batch_wait_ms = cfg.max_query_chars, cfg.max_upload_mb, cfg.reload_interval, cfg.batch_wait_ms
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
        index=index, checkpoint=cfg.checkpoint, device=cfg.device, token=token, max_query_chars=max_query_chars,
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
    uvicorn.run(app, host=host, port=port, access_log=cfg.access_log, log_level="info")


serve = declared_command(_serve, ServeConfig)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
