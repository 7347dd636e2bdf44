"""The ReasoningNER Kubeflow pipeline: fetch -> synthesize -> validate -> SFT -> GRPO -> evaluate -> promote -> deploy.

Two pipeline functions whose parameters are the run form's fields, built from the same steps
(:func:`_steps`) and components:

* :func:`cluster_pipeline` (the compiled, committed ``reasoning_ner_pipeline.yaml``): GPU node pool for the
  training and evaluation steps (accelerator type/limit, CPU and memory, node selector and
  tolerations taken from run parameters as JSON), a scratch workspace for training checkpoints,
  Secrets attached as environment, and the deploy step behind the promotion decision;
* :func:`local_pipeline` (``make run``, through ``kfp.local``): the same steps and component specs minus
  the cluster-only operations (the deploy step and Kubernetes settings), which the local runner
  cannot run.

The training workspace is an emptyDir, not a PVC, for two facts of the KFP backend (driver
``k8s.go``, ``argocompiler/argo.go``): ``CreatePVC`` turns an empty ``storage_class_name`` into a
static claim (no provisioner: Pending forever) and an absent one into ``standard`` (missing on
EKS/AKS), so it cannot ask for the cluster's default StorageClass; and KFP pods get no
``fsGroup`` (only ``runAsNonRoot``), so a freshly provisioned volume's root stays ``root:root 0755``
and the images' uid 1000 cannot write to it. Kubelet creates an emptyDir world-writable, with no
StorageClass at all. Models leave the step as artifacts in object storage; the multi-node path
shares its ReadWriteMany PVC (``shared_pvc``, created by the chart) instead.

Models and datasets pass between steps as typed artifacts (object storage in the cluster) in both
variants. Parameter defaults come from the shared configuration: qwen3-8b (the paper) for the cluster
pipeline, tiny-cpu for the local one (:func:`profile_arguments` gives any profile's values).
"""


import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from components.check_registry.component import check_registry
from components.deploy_model.component import deploy_model
from components.evaluate_model.component import evaluate_model
from components.fetch_data.component import fetch_data
from components.promote_model.component import promote_model
from components.synthesize_cot.component import synthesize_cot
from components.submit_grpo_trainjob.component import submit_grpo_trainjob
from components.submit_trainjob.component import submit_trainjob
from components.train_grpo.component import train_grpo
from components.train_sft.component import train_sft
from components.validate_data.component import validate_data
from pipelines.arguments import COMMON_PARAMETERS, ConfigParameter, config_arguments
from reasoning_ner.config import resolve_config
from reasoning_ner.images import image
# Shared with `rner preflight`, which checks a cluster against exactly these defaults.
from reasoning_ner.k8s.preflight_target import DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATIONS, PIPELINE_S3_KEYS

PIPELINE_NAME = "reasoning-ner"
COMPILED = Path(__file__).with_name("reasoning_ner_pipeline.yaml")
#: The Helm chart ships the same compiled pipeline (its registration Job uploads it).
CHART_COPY = Path(__file__).resolve().parents[1] / "charts" / "reasoning-ner" / "files" / "pipeline.yaml"
DEFAULT_REPO_URL = "https://github.com/reasoning-ner/reasoning-ner.git"
WORKSPACE_MOUNT = "/workspace"
#: Mount path of the ReadWriteMany PVC shared with the multi-node TrainJob (run parameter shared_pvc).
SHARED_MOUNT = "/shared"

#: Kubernetes Secrets attached as environment (optional: a missing Secret does not block a run).
#: The Helm chart references these names; values never travel as pipeline parameters.
SECRETS = {
    "git": ("reasoning-ner-git", {"token": "RNER_GIT_TOKEN"}),
    "s3": ("reasoning-ner-s3", {key: key for key in PIPELINE_S3_KEYS}),
    "teacher": ("reasoning-ner-teacher", {"api-key": "RNER_TEACHER_API_KEY", "judge-api-key": "RNER_JUDGE_API_KEY"}),
    "hf": ("reasoning-ner-hf", {"token": "HF_TOKEN"}),
}
#: CPU and memory (request, limit) per step kind in the cluster.
RESOURCES = {"cpu": ("2", "4", "8G", "16G"), "gpu": ("8", "16", "64G", "128G")}



def _secrets(task: dsl.PipelineTask, *names: str) -> None:
    for name in names:
        secret, keys = SECRETS[name]
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys, optional=True)


def _resources(task: dsl.PipelineTask, kind: str) -> None:
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[kind]
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim).set_memory_request(mem_req).set_memory_limit(mem_lim)


def _gpu_pool(task: dsl.PipelineTask, accelerator_type: Any, gpus: Any, node_selector: Any, tolerations: Any) -> None:
    _resources(task, "gpu")
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, node_selector_json=node_selector)
    kubernetes.add_toleration_json(task, toleration_json=tolerations)


#: The run parameters the shared configuration decides (pipelines/arguments.py): the config keys each
#: carries and how its value is read.
CONFIG_PARAMETERS = {
    **COMMON_PARAMETERS,
    "sft_data": ConfigParameter(("cot.sft_data",), lambda c: c.cot.sft_data),
    "ner_cot_uri": ConfigParameter(("cot.ner_cot_uri",), lambda c: c.cot.ner_cot_uri or ""),
    "base_model": ConfigParameter(("model.base_model",), lambda c: c.model.base_model),
    "sft_epochs": ConfigParameter(("sft.num_train_epochs",), lambda c: c.sft.num_train_epochs),
    "grpo_group_size": ConfigParameter(("grpo.num_generations",), lambda c: c.grpo.num_generations),
    "grpo_learning_rate": ConfigParameter(("grpo.learning_rate",), lambda c: c.grpo.learning_rate),
    "grpo_max_steps": ConfigParameter(("grpo.max_steps",), lambda c: max(c.grpo.max_steps, 0)),
    "use_vllm": ConfigParameter(("grpo.use_vllm",), lambda c: c.grpo.use_vllm),
    "min_gate_value": ConfigParameter(("promotion.min_gate_value",), lambda c: c.promotion.min_gate_value),
}


def profile_arguments(profile: str) -> dict[str, Any]:
    """The run parameters a profile's configuration decides, as the arguments of either pipeline."""
    return config_arguments(CONFIG_PARAMETERS, resolve_config(profile=profile))


#: The compiled (cluster) pipeline's defaults: the paper's model and hyperparameters.
PAPER = profile_arguments("qwen3-8b")
#: The local variant's defaults (`make run`; run_local passes another profile's values explicitly).
TINY = profile_arguments("tiny-cpu")

#: Help text of every run parameter: the docstring's Args, which the dashboard's run form shows.
HELP = {
    "profile": "Configuration profile every step loads (tiny-cpu, tiny-ci, qwen3-1.7b, qwen3-8b); the parameters "
               "below override it.",
    "repo_url": "Git repository holding dvc.yaml and the DVC-tracked data.",
    "revision": "Git revision (commit, tag, branch) of the data to fetch; empty = the default branch.",
    "data_path": "DVC-tracked folder of prepared datasets inside the repository.",
    "dvc_remote": "DVC remote to pull from: a remote name in the repository's .dvc/config (`s3` = s3://reasoning-ner/dvc, "
                  "reached with the S3 Secret's AWS_ENDPOINT_URL and keys) or a URL; empty = the repository's default remote.",
    "teacher_url": "OpenAI-compatible base URL of the CoT teacher (e.g. http://vllm.teacher:8000/v1); empty = the "
                   "offline gold-grounded teacher.",
    "teacher_model": "Model name the teacher endpoint serves.",
    "judge_url": "OpenAI-compatible base URL of the LLM judge; empty = structural checks only.",
    "judge_threshold": "Minimum judge score (0-10) to keep a chain.",
    "max_records_per_dataset": "Cap of training records per dataset for CoT synthesis; 0 = all.",
    "sft_data": "SFT data: synthesized (the teacher writes chains) or ner-cot (the paper's NER-CoT records, same checks).",
    "ner_cot_uri": "NER-CoT records (JSON or JSONL, s3://... or a path) when sft_data is ner-cot.",
    "base_model": "Hugging Face model id or path to fine-tune ('tiny' = the project's own tiny model).",
    "use_lora": "Train LoRA adapters (merged at export) instead of full fine-tuning (the paper).",
    "sft_epochs": "SFT epochs (ignored when sft_max_steps > 0).",
    "sft_learning_rate": "SFT peak learning rate.",
    "sft_max_steps": "SFT optimizer steps; 0 = train by epochs.",
    "grpo_group_size": "GRPO completions sampled per prompt.",
    "grpo_learning_rate": "GRPO learning rate.",
    "grpo_max_steps": "GRPO optimizer steps; 0 = by epochs over the RL sample.",
    "use_vllm": "Generate GRPO rollouts with vLLM (GPU only).",
    "eval_suite": "Evaluation suite: zero-shot (CrossNER, MIT), supervised, or all.",
    "eval_limit": "Sentences per evaluation dataset (seeded sample); 0 = all.",
    "registry_uri": "Model registry root (fsspec URI) holding versions and the champion pointer.",
    "min_gate_value": "Floor of the gate metric (micro-F1 on the profile's gate suite) a candidate must reach, besides "
                      "beating the champion.",
    "accelerator_type": "Accelerator resource name requested by the GPU steps.",
    "gpus_per_step": "Accelerators per GPU step (and per node of a multi-node TrainJob).",
    "grpo_gpus_per_step": "Accelerators of the GRPO step: the paper profiles roll out with a `trl vllm-serve` server on the "
                          "last one and train on the others (1 GPU: set the profile's grpo.vllm_mode to colocate).",
    "gpu_node_selector": "Node selector of the GPU node pool (JSON object), e.g. "
                         "{\"cloud.google.com/gke-accelerator\": \"nvidia-h100-80gb\"}.",
    "gpu_tolerations": "Tolerations for the GPU node pool's taints (JSON list of Kubernetes tolerations).",
    "deploy_namespace": "Namespace of the InferenceService to update.",
    "inference_service": "Name of the InferenceService serving the champion.",
    "canary_percent": "Knative mode: traffic share of the new model before promotion to 100 %; 0 = switch at once. "
                      "Standard mode (the chart's default) always rolls out directly.",
    "multi_node": "Run SFT as a Kubeflow Trainer TrainJob on several GPU nodes.",
    "multi_node_grpo": "Run GRPO as a Kubeflow Trainer TrainJob on several GPU nodes (vLLM server mode: the server "
                       "runs as a role of the job, from the TrainingRuntime grpo_vllm_runtime).",
    "grpo_vllm_runtime": "TrainingRuntime with the vLLM server role (the chart's multiNode.grpoRuntime.name).",
    "grpo_vllm_gpus": "GPUs of that runtime's vLLM server pod (the chart's multiNode.grpoRuntime.vllm.gpus).",
    "train_nodes": "Nodes of the multi-node TrainJobs (trainers; the vLLM server has its own pod).",
    "sft_launcher": "Launcher inside the TrainJobs (SFT and GRPO): accelerate (DeepSpeed ZeRO-3) or torchrun.",
    "shared_pvc": "ReadWriteMany PVC shared by the TrainJob's nodes and this run.",
    "trainjob_runtime": "Kubeflow Trainer ClusterTrainingRuntime of the TrainJobs without a vLLM server role.",
    "trainjob_timeout_hours": "Give up on the TrainJob after this many hours.",
}


def _documented(summary: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Give a pipeline function the docstring kfp reads: ``summary`` and every parameter's help as Args."""
    def wrap(fn: Callable[..., str]) -> Callable[..., str]:
        fn.__doc__ = summary + "\n\nArgs:\n" + "\n".join(f"    {name}: {HELP[name]}" for name in inspect.signature(fn).parameters)
        return fn
    return wrap


def _steps(p: dict[str, Any], workspace_dir: str, trainjob: dict[str, Any] | None = None) -> dict[str, dsl.PipelineTask]:
    """The stages shared by both variants; ``trainjob`` (cluster) adds the multi-node SFT and GRPO branches."""
    fetch = fetch_data(repo_url=p["repo_url"], revision=p["revision"], data_path=p["data_path"], dvc_remote=p["dvc_remote"])
    prepared, profile = fetch.outputs["prepared"], p["profile"]
    synth = synthesize_cot(prepared=prepared, profile=profile, teacher_url=p["teacher_url"],
                           teacher_model=p["teacher_model"], judge_url=p["judge_url"],
                           judge_threshold=p["judge_threshold"], max_records_per_dataset=p["max_records_per_dataset"],
                           sft_data=p["sft_data"], ner_cot_uri=p["ner_cot_uri"])
    validate = validate_data(prepared=prepared, cot=synth.outputs["cot"], profile=profile)
    sft_args = dict(cot=synth.outputs["cot"], prepared=prepared, profile=profile, base_model=p["base_model"],
                    use_lora=p["use_lora"], epochs=p["sft_epochs"], learning_rate=p["sft_learning_rate"],
                    max_steps=p["sft_max_steps"])
    extra: dict[str, dsl.PipelineTask] = {}
    if trainjob is None:  # local variant: SFT always runs in the step's own process
        sft = train_sft(**sft_args, workspace_dir=workspace_dir).after(validate)
        sft_model = sft.outputs["model"]
    else:  # cluster variant: a TrainJob on several GPU nodes when the run asks for it
        with dsl.If(p["multi_node"] == True, name="multi-node-sft"):  # noqa: E712 (a pipeline condition)
            # The image as a literal: the registration rewrites it to the deployed tag like every other reference.
            submit = submit_trainjob(**sft_args, **trainjob, image=image("train-gpu"), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                     namespace="", shared_dir=SHARED_MOUNT, poll_seconds=30.0).after(validate)
        with dsl.Else(name="single-pod-sft"):
            sft = train_sft(**sft_args, workspace_dir=workspace_dir).after(validate)
        sft_model = dsl.OneOf(submit.outputs["model"], sft.outputs["model"])
        extra["submit_trainjob"] = submit
    grpo_args = dict(sft_model=sft_model, prepared=prepared, profile=profile, group_size=p["grpo_group_size"],
                     learning_rate=p["grpo_learning_rate"], max_steps=p["grpo_max_steps"], use_lora=p["use_lora"],
                     use_vllm=p["use_vllm"])
    if trainjob is None:
        grpo = train_grpo(**grpo_args, workspace_dir=workspace_dir)
        grpo_model = grpo.outputs["model"]
    else:  # GRPO too may run as a TrainJob, with the vLLM server as a role of the job
        with dsl.If(p["multi_node_grpo"] == True, name="multi-node-grpo"):  # noqa: E712 (a pipeline condition)
            submit_grpo = submit_grpo_trainjob(**grpo_args, **trainjob, image=image("train-gpu"),
                                               run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, namespace="",
                                               shared_dir=SHARED_MOUNT, poll_seconds=30.0,
                                               vllm_runtime=p["grpo_vllm_runtime"], vllm_gpus=p["grpo_vllm_gpus"])
        with dsl.Else(name="single-pod-grpo"):
            grpo = train_grpo(**grpo_args, workspace_dir=workspace_dir)
        grpo_model = dsl.OneOf(submit_grpo.outputs["model"], grpo.outputs["model"])
        extra["submit_grpo_trainjob"] = submit_grpo
    evaluate = evaluate_model(model=grpo_model, prepared=prepared, profile=profile, suite=p["eval_suite"],
                              limit=p["eval_limit"])
    promote = promote_model(model=grpo_model, report_json=evaluate.outputs["report_json"],
                            profile=profile, registry_uri=p["registry_uri"], min_gate_value=p["min_gate_value"])
    promote.set_caching_options(False)  # the champion may have moved since a cached run
    return {"fetch": fetch, "synthesize": synth, "validate": validate, "sft": sft, "grpo": grpo,
            "evaluate": evaluate, "promote": promote, **extra}


DESCRIPTION = ("ReasoningNER (arXiv 2511.11978): CoT synthesis, CoT tuning (SFT), reasoning enhancement (GRPO), "
               "evaluation, promotion gate and KServe deployment. Settings default to the profile's configuration.")


@dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
@_documented(DESCRIPTION)
def cluster_pipeline(
    profile: str = PAPER["profile"],
    repo_url: str = DEFAULT_REPO_URL,
    revision: str = "",
    data_path: str = "work/data",
    dvc_remote: str = "s3",
    teacher_url: str = PAPER["teacher_url"],
    teacher_model: str = PAPER["teacher_model"],
    judge_url: str = PAPER["judge_url"],
    judge_threshold: float = PAPER["judge_threshold"],
    max_records_per_dataset: int = PAPER["max_records_per_dataset"],
    sft_data: str = PAPER["sft_data"],
    ner_cot_uri: str = PAPER["ner_cot_uri"],
    base_model: str = PAPER["base_model"],
    use_lora: bool = PAPER["use_lora"],
    sft_epochs: float = PAPER["sft_epochs"],
    sft_learning_rate: float = PAPER["sft_learning_rate"],
    sft_max_steps: int = PAPER["sft_max_steps"],
    grpo_group_size: int = PAPER["grpo_group_size"],
    grpo_learning_rate: float = PAPER["grpo_learning_rate"],
    grpo_max_steps: int = PAPER["grpo_max_steps"],
    use_vllm: bool = PAPER["use_vllm"],
    eval_suite: str = "all",
    eval_limit: int = PAPER["eval_limit"],
    registry_uri: str = "s3://reasoning-ner/registry",
    min_gate_value: float = PAPER["min_gate_value"],
    accelerator_type: str = "nvidia.com/gpu",
    gpus_per_step: int = 1,
    grpo_gpus_per_step: int = 2,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    deploy_namespace: str = "reasoning-ner",
    inference_service: str = "reasoning-ner",
    canary_percent: int = 10,
    multi_node: bool = False,
    multi_node_grpo: bool = False,
    grpo_vllm_runtime: str = "reasoning-ner-grpo-vllm",
    grpo_vllm_gpus: int = 1,
    train_nodes: int = 2,
    sft_launcher: str = "accelerate",
    shared_pvc: str = "reasoning-ner-shared",
    trainjob_runtime: str = "torch-distributed",
    trainjob_timeout_hours: float = 72.0,
) -> str:
    p = dict(locals())
    accelerator, gpus, selector, tolerations = (p["accelerator_type"], p["gpus_per_step"], p["gpu_node_selector"],
                                                p["gpu_tolerations"])
    tasks = _steps(p, WORKSPACE_MOUNT, trainjob=dict(
        num_nodes=p["train_nodes"], gpus_per_node=gpus, accelerator_type=accelerator, node_selector=selector,
        tolerations=tolerations, shared_pvc=p["shared_pvc"], runtime=p["trainjob_runtime"],
        timeout_hours=p["trainjob_timeout_hours"], launcher=p["sft_launcher"]))
    # The registry is checked before training, not found wrong at the promotion step hours later.
    check = check_registry(registry_uri=p["registry_uri"])
    _resources(check, "cpu")
    _secrets(check, "s3")
    for name in ("sft", "submit_trainjob"):
        tasks[name].after(check)
    for name in ("submit_trainjob", "submit_grpo_trainjob"):
        _resources(tasks[name], "cpu")
        kubernetes.mount_pvc(tasks[name], pvc_name=p["shared_pvc"], mount_path=SHARED_MOUNT)
    _secrets(tasks["fetch"], "git", "s3")
    _secrets(tasks["synthesize"], "teacher", "s3")  # s3: NER-CoT records in the bucket (sft_data ner-cot)
    for name in ("fetch", "synthesize", "validate", "promote"):
        _resources(tasks[name], "cpu")
    for name in ("sft", "grpo", "evaluate"):
        _gpu_pool(tasks[name], accelerator, p["grpo_gpus_per_step"] if name == "grpo" else gpus, selector, tolerations)
        _secrets(tasks[name], "hf")
    for name in ("sft", "grpo"):  # scratch for checkpoints, writable by the images' uid (see the module docstring)
        kubernetes.empty_dir_mount(tasks[name], volume_name="workspace", mount_path=WORKSPACE_MOUNT)
    _secrets(tasks["promote"], "s3")
    with dsl.If(tasks["promote"].outputs["decision"] == "promoted", name="promoted"):
        deploy = deploy_model(model_uri=tasks["promote"].outputs["model_uri"],
                              model_version=tasks["promote"].outputs["version"], namespace=p["deploy_namespace"],
                              inference_service=p["inference_service"], canary_percent=p["canary_percent"])
        deploy.set_caching_options(False)
        _resources(deploy, "cpu")
        _secrets(deploy, "s3")
    return tasks["promote"].outputs["decision"]


@dsl.pipeline(name=f"{PIPELINE_NAME}-local", description="ReasoningNER end to end, local variant (kfp.local).")
@_documented("ReasoningNER end to end, local variant (kfp.local).")
def local_pipeline(
    profile: str = TINY["profile"],
    repo_url: str = str(Path(__file__).resolve().parents[1]),
    revision: str = "",
    data_path: str = "work/data",
    dvc_remote: str = "",
    teacher_url: str = TINY["teacher_url"],
    teacher_model: str = TINY["teacher_model"],
    judge_url: str = TINY["judge_url"],
    judge_threshold: float = TINY["judge_threshold"],
    max_records_per_dataset: int = TINY["max_records_per_dataset"],
    sft_data: str = TINY["sft_data"],
    ner_cot_uri: str = TINY["ner_cot_uri"],
    base_model: str = TINY["base_model"],
    use_lora: bool = TINY["use_lora"],
    sft_epochs: float = TINY["sft_epochs"],
    sft_learning_rate: float = TINY["sft_learning_rate"],
    sft_max_steps: int = TINY["sft_max_steps"],
    grpo_group_size: int = TINY["grpo_group_size"],
    grpo_learning_rate: float = TINY["grpo_learning_rate"],
    grpo_max_steps: int = TINY["grpo_max_steps"],
    use_vllm: bool = TINY["use_vllm"],
    eval_suite: str = "all",
    eval_limit: int = TINY["eval_limit"],
    registry_uri: str = "work/registry",
    min_gate_value: float = TINY["min_gate_value"],
) -> str:
    return _steps(locals(), workspace_dir="")["promote"].outputs["decision"]


def build_pipeline(cluster: bool = True):
    """The cluster pipeline (compiled and committed) or the local one (kfp.local)."""
    return cluster_pipeline if cluster else local_pipeline


def compile_pipeline(path: Path = COMPILED) -> Path:
    """Compile the cluster variant (the one committed file) and refresh the chart's copy."""
    compiler.Compiler().compile(build_pipeline(cluster=True), str(path))
    if path == COMPILED and CHART_COPY.parent.is_dir():
        CHART_COPY.write_bytes(path.read_bytes())
    return path
