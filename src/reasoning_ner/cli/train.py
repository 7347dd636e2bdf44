"""``rner model init-tiny`` and ``rner train``: build the tiny base model, then stages 2 (SFT) and 3 (GRPO)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, get_config, stdout

model_app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)
train_app = typer.Typer(help="Stages 2 and 3: CoT tuning (SFT) and reasoning enhancement (GRPO) with trl.", no_args_is_help=True)


@model_app.command("init-tiny")
def model_init_tiny(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: config model.tiny_dir).")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Extra text file (one text per line) for the tokenizer.")] = None,
    data_dir: Annotated[
        Optional[Path], typer.Option(help="Prepared data folder whose train splits join the tokenizer corpus.")
    ] = None,
) -> None:
    """Build the tiny local base model (random weights, own BPE tokenizer) in Hugging Face format."""
    from ..modeling import init_tiny

    cfg = get_config(ctx)
    out_dir = out or Path(cfg.model.tiny_dir)
    extra: list[str] = []
    if corpus is not None:
        if not corpus.is_file():
            raise fail(f"corpus file {corpus} does not exist")
        extra = [line.rstrip("\n") for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = data_dir if data_dir is not None else Path(cfg.data.prepared_dir)
    summary = init_tiny(out_dir, cfg.model.tiny, corpus=extra, data_dir=data if data.is_dir() else None, prompt_cfg=cfg.prompt)
    stdout.print_json(json.dumps(summary, default=str))


@train_app.command("sft")
def train_sft_cmd(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option("--data", help="Canonical CoT JSONL (repeatable), e.g. work/cot/accepted.jsonl.")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoints/, model/, summary.json, loss.png.")],
    base_model: Annotated[Optional[str], typer.Option(help="Hub name or path (default: config model.base_model; 'tiny' = model.tiny_dir).")] = None,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="JSONL records for a final parse-rate/F1 check.")] = None,
    eval_n: Annotated[int, typer.Option(help="Seeded sample size of --eval records.")] = 200,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint in OUT.")] = True,
) -> None:
    """CoT tuning with trl's SFTTrainer (full or LoRA, sft.finetune); exports a Hugging Face model."""
    import random

    from ..modeling import ModelLoadError
    from ..records import RecordError
    from ..training.sft import NonFiniteLossError, TrainingDataError, as_records, train_sft

    cfg = get_config(ctx)
    try:
        evals = as_records(eval_file) if eval_file is not None else None
        if evals is not None and len(evals) > eval_n:
            evals = random.Random(cfg.seed).sample(evals, eval_n)
        summary = train_sft(cfg, data, out, base_model=base_model, eval_records=evals, resume=resume,
                            progress=sys.stderr.isatty())
    except (TrainingDataError, RecordError, ModelLoadError) as exc:
        raise fail(str(exc)) from exc
    except NonFiniteLossError as exc:
        raise fail(str(exc), 3) from exc
    stdout.print_json(json.dumps(summary, default=str))


@train_app.command("grpo")
def train_grpo_cmd(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="SFT output folder (its model/ is used) or any Hugging Face model folder.")],
    data: Annotated[list[Path], typer.Option("--data", help="Canonical training JSONL (repeatable): the RL prompt pool.")],
    out: Annotated[Path, typer.Option(help="Output folder: model/, checkpoints/, metrics.jsonl, plots/, summary.json.")],
    max_steps: Annotated[Optional[int], typer.Option(help="Override grpo.max_steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint in OUT.")] = True,
) -> None:
    """Reasoning enhancement with trl's GRPOTrainer; reward = 10 x F1 + 1 x schema (weights in config)."""
    from ..modeling import ModelLoadError
    from ..records import RecordError
    from ..training.grpo import GRPOError, train_grpo
    from ..training.rl_data import RLDataError

    cfg = get_config(ctx)
    try:
        summary = train_grpo(cfg, model, data, out, max_steps=max_steps, resume=resume)
    except (GRPOError, RLDataError, RecordError, ModelLoadError) as exc:
        raise fail(str(exc)) from exc
    keys = ("model_dir", "global_steps", "train_seconds", "final_metrics")
    stdout.print_json(json.dumps({k: summary.get(k) for k in keys}, default=str))


@train_app.command("vllm-serve-command")
def train_vllm_serve_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="The policy GRPO starts from (the SFT model).")],
) -> None:
    """Print the `trl vllm-serve` command of the configured server-mode rollouts (run it on the server's GPU)."""
    import shlex

    from ..training.vllm_server import server_base_url, vllm_serve_command

    cfg = get_config(ctx)
    stdout.print(shlex.join(vllm_serve_command(cfg, model)), soft_wrap=True)
    stdout.print(f"# trainers reach it at {server_base_url(cfg.grpo)} (grpo.vllm_server_base_url / host / port)", soft_wrap=True)
