"""`uldkit serve`: an OpenAI-compatible HTTP server and playground for a (unlearned) model."""

from __future__ import annotations

import ipaddress
import signal
import socket
from pathlib import Path

import typer
from rich.console import Console

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.errors import ConfigError


@app.command("serve")
def serve_command(
    model: Path = typer.Option(..., "--model", help="Model directory (plain or ULD) to serve."),
    compare_with: Path = typer.Option(
        None, "--compare-with", help="The original target, served too and shown beside the "
        "model in the playground (default for ULD: the same model at alpha 0)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str = typer.Option(
        None, "--api-key", envvar="ULDKIT_API_KEY",
        help="Require 'Authorization: Bearer KEY' on the API (or set ULDKIT_API_KEY)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Another name clients may reach the server by (repeatable; "
        "'*' for any). Other names in the Host header are refused, against DNS rebinding; IP "
        "addresses, localhost and the --host name always work."),
    name: str = typer.Option(None, "--name", help="Model id clients use (default: dir name)."),
    max_tokens_cap: int = typer.Option(512, "--max-tokens-cap", min=1,
                                       help="Largest max_tokens a request may ask for."),
    max_batch: int = typer.Option(16, "--max-batch", min=1,
                                  help="Most requests generated together."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0,
                                        help="How long a request waits for others to batch with."),
    alpha: float = typer.Option(None, "--alpha", help="ULD: default alpha for requests."),
    tau: float = typer.Option(None, "--tau", help="ULD: default tau for requests."),
    lock_settings: bool = typer.Option(
        False, "--lock-settings", help="ULD: refuse per-request alpha/tau (alpha 0 would give "
        "clients the original target's answers)."),
    graceful_timeout: float = typer.Option(
        120.0, "--graceful-timeout", min=0.0,
        help="On SIGTERM/Ctrl+C, seconds to let in-flight requests finish."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads for torch (0: torch's default)."),
    log_level: str = typer.Option("info", "--log-level"),
    device: str = options.DEVICE,
) -> None:
    """Serve a model: /v1/completions, /v1/chat/completions, /v1/models and a playground at /."""
    from uldkit.errors import require

    require("serve", "uldkit serve")
    import uvicorn

    from uldkit.cli.loading import load_language_model
    from uldkit.serve import create_app

    console = Console(stderr=True)
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key (or ULDKIT_API_KEY) is empty or whitespace: it would let "
                          "any client in; give a real key, or leave it unset for no key")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if not api_key and not _is_loopback(host):
        console.print(f"[bold yellow]warning:[/] listening on {host} without an API key: anyone "
                      "who can reach this address can use the model (set --api-key)", soft_wrap=True)
    settings = {k: v for k, v in (("alpha", alpha), ("tau", tau)) if v is not None}
    served = load_language_model(model, device=device, **settings) if settings else model
    application = create_app(
        served, name=name or model.resolve().name, compare_with=compare_with, api_key=api_key,
        max_tokens_cap=max_tokens_cap, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
        allow_request_settings=not lock_settings, device=device,
        allowed_hosts=_host_names(host, allow_host),
    )
    config = uvicorn.Config(application, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=graceful_timeout or None)
    console.print(f"serving {', '.join(application.state.models)} on http://{host}:{port} "
                  "(playground at /, API under /v1)", highlight=False, soft_wrap=True)
    # uvicorn finishes in-flight requests on SIGTERM, then re-raises the signal to whatever
    # handler was installed before it; this one lets the command end normally (exit 0).
    signal.signal(signal.SIGTERM, _after_graceful_shutdown)
    server = uvicorn.Server(config)
    server.run()  # exits 1 itself when it cannot listen (e.g. the port is taken)


def _after_graceful_shutdown(signum: int, frame: object) -> None:
    pass


def _host_names(host: str, extra: list[str]) -> list[str]:
    """Names a client may put in Host: the bound name, and the machine's own name when the
    server listens beyond loopback, plus what the user allowed."""
    names = [host, *extra]
    if not _is_loopback(host):
        names.append(socket.gethostname())
    return names


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        if not host:
            raise ConfigError("--host must not be empty") from None
        return False
