"""``rner flywheel``: the improvement loop's services (the payload-logging sink)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import err_console, get_config

flywheel_app = typer.Typer(help="The improvement loop: served traffic becomes training data.", no_args_is_help=True)


@flywheel_app.command("sink")
def flywheel_sink(
    ctx: typer.Context,
    out: Annotated[Optional[str], typer.Option(help="Where to write the records (default: config flywheel.log_root).")] = None,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default; 0.0.0.0 in the chart's pod).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port KServe's logger posts to.")] = 8080,
) -> None:
    """Receive KServe's payload-logging CloudEvents and write NER records as date-partitioned JSONL."""
    import uvicorn

    from ..flywheel.sink import Sink, SinkSettings, create_app

    f = get_config(ctx).flywheel
    settings = SinkSettings(root=out or f.log_root, retention_days=f.retention_days, opt_out_labels=frozenset(f.opt_out_labels),
                            pair_timeout_s=f.pair_timeout_s, expect_responses=f.logger_mode == "all",
                            flush_records=f.flush_records, flush_seconds=f.flush_seconds)
    err_console.print(f"payload sink on http://{host}:{port}/ -> {settings.root}")
    uvicorn.run(create_app(Sink(settings)), host=host, port=port, log_level="warning")
