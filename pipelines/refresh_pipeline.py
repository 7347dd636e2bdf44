"""The refresh variant: retrain the champion on harvested traffic and promote it only without a zero-shot regression.

lookup_champion -> fetch_data -> check_window -> (empty window: skip_refresh, nothing promoted) ->
harvest_traffic (teacher re-annotation + the validation gate) and synthesize_cot (the original data,
as the main pipeline makes it) -> mix_cot_data (harvested : original = mix_ratio) -> validate_data ->
train_sft (starting from the champion's registry copy) -> evaluate_refresh (the frozen suites + the
held-out harvested slice) -> promote_refresh (zero-shot regression within the tolerance) ->
deploy_model (cluster, when promoted).

GRPO does not run: the champion already went through it, a refresh is a short SFT on new data that
keeps what GRPO taught (the start model is the champion), and the zero-shot gate refuses a candidate
that lost it. A refresh on the paper's hardware is then about an hour of SFT, cheap enough for a
weekly schedule (docs/flywheel.md).

Two functions as in :mod:`pipelines.reasoning_ner_pipeline`: :func:`refresh_cluster_pipeline` (compiled,
committed as ``refresh_pipeline.yaml``, shipped in the chart) and :func:`refresh_local_pipeline` (kfp.local).
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from components.check_window.component import check_window
from components.deploy_model.component import deploy_model
from components.evaluate_refresh.component import evaluate_refresh
from components.fetch_data.component import fetch_data
from components.harvest_traffic.component import harvest_traffic
from components.lookup_champion.component import lookup_champion
from components.mix_cot_data.component import mix_cot_data
from components.promote_refresh.component import promote_refresh
from components.skip_refresh.component import skip_refresh
from components.synthesize_cot.component import synthesize_cot
from components.train_sft.component import train_sft
from components.validate_data.component import validate_data
from pipelines.arguments import COMMON_PARAMETERS, ConfigParameter, config_arguments
from pipelines.reasoning_ner_pipeline import (DEFAULT_REPO_URL, HELP, PIPELINE_NAME, WORKSPACE_MOUNT, _gpu_pool,
                                              _resources, _secrets)
from reasoning_ner.config import resolve_config
from reasoning_ner.k8s.preflight_target import DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATIONS

REFRESH_NAME = f"{PIPELINE_NAME}-refresh"
COMPILED = Path(__file__).with_name("refresh_pipeline.yaml")
#: The chart registers this pipeline next to the main one (and its recurring run, refresh.schedule).
CHART_COPY = Path(__file__).resolve().parents[1] / "charts" / "reasoning-ner" / "files" / "refresh-pipeline.yaml"

REFRESH_HELP = {
    **HELP,
    "since": "First day of logged traffic to harvest (YYYY-MM-DD); empty = the last lookback_days up to until.",
    "until": "Last day of logged traffic to harvest (YYYY-MM-DD); empty = today (UTC).",
    "lookback_days": "Days of traffic a run harvests when since is empty (a scheduled run: its cadence); 0 = the "
                     "profile's flywheel.harvest_window_days.",
    "harvest_budget": "Most sentences of the window sent to the teacher (uncertain ones first); 0 = the profile's.",
    "log_root": "Where the payload sink wrote the traffic (s3://bucket/prefix); empty = the profile's flywheel.log_root.",
    "teacher_url": "OpenAI-compatible base URL of the teacher that re-annotates the traffic (and synthesizes the "
                   "original data, as in the main pipeline).",
    "mix_ratio": "Harvested : original CoT records in the SFT data (1.0 = one original per harvested record).",
    "zero_shot_tolerance": "Promote only if the zero-shot suite's gate metric drops at most this much below the "
                           "champion's (absolute).",
}


#: The run parameters the shared configuration decides (pipelines/arguments.py).
CONFIG_PARAMETERS = {
    **COMMON_PARAMETERS,
    "lookback_days": ConfigParameter(("flywheel.harvest_window_days",), lambda c: c.flywheel.harvest_window_days),
    "harvest_budget": ConfigParameter(("flywheel.harvest_budget",), lambda c: c.flywheel.harvest_budget),
    "mix_ratio": ConfigParameter(("refresh.mix_ratio",), lambda c: c.refresh.mix_ratio),
    "zero_shot_tolerance": ConfigParameter(("promotion.zero_shot_tolerance",),
                                           lambda c: c.promotion.zero_shot_tolerance),
}


def refresh_arguments(profile: str) -> dict[str, Any]:
    """The run parameters a profile's configuration decides."""
    return config_arguments(CONFIG_PARAMETERS, resolve_config(profile=profile))


PAPER = refresh_arguments("qwen3-8b")
TINY = refresh_arguments("tiny-cpu")


def _documented(summary: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    def wrap(fn: Callable[..., str]) -> Callable[..., str]:
        fn.__doc__ = summary + "\n\nArgs:\n" + "\n".join(
            f"    {name}: {REFRESH_HELP[name]}" for name in inspect.signature(fn).parameters)
        return fn
    return wrap


def _steps(p: dict[str, Any], workspace_dir: str, cluster: bool) -> dict[str, dsl.PipelineTask]:
    """The refresh steps; harvest, training and promotion sit under the window's non-empty condition."""
    tasks: dict[str, dsl.PipelineTask] = {}
    champion = tasks["champion"] = lookup_champion(registry_uri=p["registry_uri"])
    fetch = tasks["fetch"] = fetch_data(repo_url=p["repo_url"], revision=p["revision"], data_path=p["data_path"],
                                        dvc_remote=p["dvc_remote"]).after(champion)
    check = tasks["check"] = check_window(prepared=fetch.outputs["prepared"], profile=p["profile"], log_root=p["log_root"],
                                          since=p["since"], until=p["until"], lookback_days=p["lookback_days"])
    check.set_caching_options(False)  # "today" moves, and the sink keeps writing: never last week's answer
    with dsl.If(check.outputs["usable"] == 0, name="empty-window"):
        tasks["skip"] = skip_refresh(message=check.outputs["message"], champion_version=champion.outputs["version"])
    with dsl.Else(name="refresh"):
        tasks.update(_train_and_promote(p, workspace_dir, champion, fetch, check))
        if cluster:
            with dsl.If(tasks["promote"].outputs["decision"] == "promoted", name="promoted"):
                tasks["deploy"] = deploy_model(
                    model_uri=tasks["promote"].outputs["model_uri"], model_version=tasks["promote"].outputs["version"],
                    namespace=p["deploy_namespace"], inference_service=p["inference_service"],
                    canary_percent=p["canary_percent"])
                tasks["deploy"].set_caching_options(False)
    return tasks


def _train_and_promote(p: dict[str, Any], workspace_dir: str, champion: dsl.PipelineTask, fetch: dsl.PipelineTask,
                       check: dsl.PipelineTask) -> dict[str, dsl.PipelineTask]:
    profile, prepared = p["profile"], fetch.outputs["prepared"]
    harvest = harvest_traffic(prepared=prepared, profile=profile, log_root=p["log_root"], since=check.outputs["since"],
                              until=check.outputs["until"], budget=p["harvest_budget"], teacher_url=p["teacher_url"],
                              teacher_model=p["teacher_model"], judge_url=p["judge_url"],
                              judge_threshold=p["judge_threshold"])
    harvest.set_caching_options(False)  # the sink may still append to the window's last day
    # The original data exactly as the main pipeline makes it (a cache hit in the cluster when nothing changed).
    synth = synthesize_cot(prepared=prepared, profile=profile, teacher_url=p["teacher_url"], teacher_model=p["teacher_model"],
                           judge_url=p["judge_url"], judge_threshold=p["judge_threshold"],
                           max_records_per_dataset=p["max_records_per_dataset"], sft_data="synthesized", ner_cot_uri="")
    mix = mix_cot_data(harvested=harvest.outputs["cot"], original=synth.outputs["cot"], profile=profile,
                       mix_ratio=p["mix_ratio"])
    validate = validate_data(prepared=prepared, cot=mix.outputs["mixed"], profile=profile)
    sft = train_sft(cot=mix.outputs["mixed"], prepared=prepared, profile=profile,
                    base_model=champion.outputs["model_uri"], use_lora=p["use_lora"], epochs=0.0,
                    learning_rate=p["sft_learning_rate"], max_steps=p["sft_max_steps"],
                    workspace_dir=workspace_dir).after(validate)
    evaluate = evaluate_refresh(model=sft.outputs["model"], prepared=prepared, heldout=harvest.outputs["heldout"],
                                profile=profile, limit=p["eval_limit"])
    promote = promote_refresh(model=sft.outputs["model"], report_json=evaluate.outputs["report_json"], profile=profile,
                              registry_uri=p["registry_uri"], zero_shot_tolerance=p["zero_shot_tolerance"])
    promote.set_caching_options(False)  # the champion may have moved since a cached run
    return {"harvest": harvest, "synthesize": synth, "mix": mix, "validate": validate, "sft": sft, "evaluate": evaluate,
            "promote": promote}


DESCRIPTION = ("ReasoningNER refresh: retrain the champion on harvested traffic mixed with the original data; "
               "promote only if the zero-shot suite does not regress beyond the tolerance.")


@dsl.pipeline(name=REFRESH_NAME, description=DESCRIPTION)
@_documented(DESCRIPTION)
def refresh_cluster_pipeline(
    profile: str = PAPER["profile"],
    since: str = "",
    until: str = "",
    lookback_days: int = PAPER["lookback_days"],
    harvest_budget: int = PAPER["harvest_budget"],
    log_root: str = "s3://reasoning-ner/traffic",
    teacher_url: str = PAPER["teacher_url"],
    teacher_model: str = PAPER["teacher_model"],
    judge_url: str = PAPER["judge_url"],
    judge_threshold: float = PAPER["judge_threshold"],
    repo_url: str = DEFAULT_REPO_URL,
    revision: str = "",
    data_path: str = "work/data",
    dvc_remote: str = "s3",
    max_records_per_dataset: int = PAPER["max_records_per_dataset"],
    mix_ratio: float = PAPER["mix_ratio"],
    use_lora: bool = PAPER["use_lora"],
    sft_learning_rate: float = PAPER["sft_learning_rate"],
    sft_max_steps: int = PAPER["sft_max_steps"],
    eval_limit: int = PAPER["eval_limit"],
    registry_uri: str = "s3://reasoning-ner/registry",
    zero_shot_tolerance: float = PAPER["zero_shot_tolerance"],
    accelerator_type: str = "nvidia.com/gpu",
    gpus_per_step: int = 1,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    deploy_namespace: str = "reasoning-ner",
    inference_service: str = "reasoning-ner",
    canary_percent: int = 10,
) -> str:
    p = dict(locals())
    tasks = _steps(p, WORKSPACE_MOUNT, cluster=True)
    _secrets(tasks["champion"], "s3")
    _secrets(tasks["harvest"], "teacher", "s3")  # s3: the logged traffic in the bucket
    _secrets(tasks["fetch"], "git", "s3")
    _secrets(tasks["synthesize"], "teacher", "s3")
    _secrets(tasks["check"], "s3")
    for name in ("champion", "check", "harvest", "skip", "fetch", "synthesize", "mix", "validate", "promote", "deploy"):
        _resources(tasks[name], "cpu")
    for name in ("sft", "evaluate"):
        _gpu_pool(tasks[name], p["accelerator_type"], p["gpus_per_step"], p["gpu_node_selector"], p["gpu_tolerations"])
    _secrets(tasks["sft"], "hf", "s3")  # s3: the champion's registry copy is the start model
    _secrets(tasks["evaluate"], "hf")
    kubernetes.empty_dir_mount(tasks["sft"], volume_name="workspace", mount_path=WORKSPACE_MOUNT)
    for name in ("promote", "deploy"):
        _secrets(tasks[name], "s3")
    return dsl.OneOf(tasks["skip"].output, tasks["promote"].outputs["decision"])


@dsl.pipeline(name=f"{REFRESH_NAME}-local", description="ReasoningNER refresh, local variant (kfp.local).")
@_documented("ReasoningNER refresh, local variant (kfp.local).")
def refresh_local_pipeline(
    profile: str = TINY["profile"],
    since: str = "",
    until: str = "",
    lookback_days: int = TINY["lookback_days"],
    harvest_budget: int = TINY["harvest_budget"],
    log_root: str = "",
    teacher_url: str = TINY["teacher_url"],
    teacher_model: str = TINY["teacher_model"],
    judge_url: str = TINY["judge_url"],
    judge_threshold: float = TINY["judge_threshold"],
    repo_url: str = str(Path(__file__).resolve().parents[1]),
    revision: str = "",
    data_path: str = "work/data",
    dvc_remote: str = "",
    max_records_per_dataset: int = TINY["max_records_per_dataset"],
    mix_ratio: float = TINY["mix_ratio"],
    use_lora: bool = TINY["use_lora"],
    sft_learning_rate: float = TINY["sft_learning_rate"],
    sft_max_steps: int = TINY["sft_max_steps"],
    eval_limit: int = TINY["eval_limit"],
    registry_uri: str = "work/registry",
    zero_shot_tolerance: float = TINY["zero_shot_tolerance"],
) -> str:
    tasks = _steps(locals(), workspace_dir="", cluster=False)
    return dsl.OneOf(tasks["skip"].output, tasks["promote"].outputs["decision"])


def compile_refresh(path: Path = COMPILED) -> Path:
    """Compile the cluster refresh pipeline (the committed file) and refresh the chart's copy."""
    compiler.Compiler().compile(refresh_cluster_pipeline, str(path))
    if path == COMPILED and CHART_COPY.parent.is_dir():
        CHART_COPY.write_bytes(path.read_bytes())
    return path
