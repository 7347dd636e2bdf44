"""``rner``: the one entry point for every stage (local runs, DVC stages, KFP components).

Each command group lives in its own module; this one builds ``app`` (the console script
``reasoning_ner.cli:app``) from them. Top-level commands are registered here, in the order
``rner --help`` lists them.
"""

from __future__ import annotations

import typer

from .common import main
from .config import config_app, summary
from .cot import cot_app
from .data import data_app
from .evaluate import eval_app, promote_cmd
from .flywheel import flywheel_app
from .k8s import deploy_cmd, k8s_app, preflight_cmd
from .pipeline import pipeline_app
from .serve import SERVE_CONTEXT_SETTINGS, serve_cmd
from .train import model_app, train_app

__all__ = ["app"]

app = typer.Typer(help="ReasoningNER: reason, then extract named entities.", no_args_is_help=True, add_completion=False)
app.callback()(main)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(eval_app, name="eval")
app.add_typer(config_app, name="config")
app.add_typer(cot_app, name="cot")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(k8s_app, name="k8s")
app.add_typer(train_app, name="train")
app.add_typer(flywheel_app, name="flywheel")

app.command("promote")(promote_cmd)
app.command("serve", context_settings=SERVE_CONTEXT_SETTINGS)(serve_cmd)
app.command("deploy")(deploy_cmd)
app.command("preflight")(preflight_cmd)
app.command("summary")(summary)
