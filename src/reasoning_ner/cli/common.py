"""What every ``rner`` command shares: the consoles, the error exit and the resolved configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..config import Config, ConfigError, resolve_config

# soft_wrap: a long path or URL stays on one line (copyable, and valid YAML/JSON when piped); tables still fit.
err_console = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise (2: bad input, unless ``code`` says otherwise)."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def main(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="YAML config (default: ./params.yaml when present and no --profile is given)."),
    ] = None,
    profile: Annotated[Optional[str], typer.Option(help="Profile: tiny-cpu, tiny-ci, qwen3-1.7b, qwen3-8b.")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set prompt.style=paper.")
    ] = None,
) -> None:
    """The root options (--config, --profile, --set), kept in ``ctx.obj`` for :func:`get_config`."""
    ctx.obj = {"config_path": config, "profile": profile, "overrides": list(set_ or [])}


def get_config(ctx: typer.Context, extra: list[str] | None = None) -> Config:
    """The configuration the root options name, with ``extra`` overrides last; a bad one exits 2."""
    opts = ctx.find_root().obj or {}
    try:
        return resolve_config(opts.get("config_path"), opts.get("profile"), [*opts.get("overrides", []), *(extra or [])])
    except ConfigError as exc:
        raise fail(str(exc)) from exc
