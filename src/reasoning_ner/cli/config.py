"""``rner config show`` (the resolved configuration) and ``rner summary`` (what a local run produced)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import get_config, stdout

config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the resolved configuration (defaults + profile + file + overrides) as YAML."""
    # Plain text, not the rich console: the output is a config file (`rner config show > my.yaml`).
    typer.echo(get_config(ctx).dump_yaml(), nl=False)


def summary(work: Annotated[Path, typer.Option(help="The local work folder.")] = Path("work")) -> None:
    """Summarize what a local run produced: prepared datasets and models."""
    data_summary = work / "data" / "prepare_summary.json"
    if data_summary.is_file():
        info = json.loads(data_summary.read_text())
        table = Table(title=f"Datasets in {work / 'data'} ({info['source_format']}, from {info['source_dir']})")
        table.add_column("dataset")
        table.add_column("splits (sentences)")
        for name, splits in info["datasets"].items():
            table.add_row(name, ", ".join(f"{s} {n}" for s, n in splits.items()))
        stdout.print(table)
    else:
        stdout.print(f"no prepared data in {work / 'data'} (run `rner data prepare`)")
    models = sorted(p.parent for p in (work / "models").glob("*/config.json")) if (work / "models").is_dir() else []
    for model_dir in models:
        cfg = json.loads((model_dir / "config.json").read_text())
        size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
        stdout.print(
            f"model {model_dir}: {cfg.get('model_type')} hidden {cfg.get('hidden_size')} x {cfg.get('num_hidden_layers')} layers, "
            f"vocab {cfg.get('vocab_size')}, {size / 1e6:.1f} MB safetensors"
        )
    if not models:
        stdout.print(f"no models in {work / 'models'} (run `rner model init-tiny`)")
    stdout.print("next: `make test` runs the test suite; see README.md for the stages that follow.")
