"""The ReasoningNER Kubeflow pipeline: fetch -> synthesize -> validate -> SFT -> GRPO -> evaluate -> promote -> deploy.

One factory, :func:`build_pipeline`, makes both variants from the same components:

* ``cluster=True`` (the compiled, committed ``reasoning_ner_pipeline.yaml``): GPU node pool for the
  training and evaluation steps (accelerator type/limit, CPU and memory, node selector and
  tolerations taken from run parameters as JSON), a workspace PVC as the training checkpoint cache,
  Secrets attached as environment, and the deploy step behind the promotion decision;
* ``cluster=False`` (``make run``, through ``kfp.local``): the same steps and component specs minus
  the cluster-only operations (PVC create/delete and deploy), which the local runner cannot run.

Models and datasets pass between steps as typed artifacts (object storage in the cluster) in both
variants. Parameter defaults come from the shared configuration of the chosen profile.
"""


from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from components.evaluate_model.component import evaluate_model
from components.fetch_data.component import fetch_data
from components.promote_model.component import promote_model
from components.synthesize_cot.component import synthesize_cot
from components.train_grpo.component import train_grpo
from components.submit_trainjob.component import submit_trainjob
from components.train_sft.component import train_sft
from components.validate_data.component import validate_data
from reasoning_ner.config import load_config

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
    "s3": ("reasoning-ner-s3", {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
                                "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}),
    "teacher": ("reasoning-ner-teacher", {"api-key": "RNER_TEACHER_API_KEY", "judge-api-key": "RNER_JUDGE_API_KEY"}),
    "hf": ("reasoning-ner-hf", {"token": "HF_TOKEN"}),
}
#: CPU and memory (request, limit) per step kind in the cluster.
RESOURCES = {"cpu": ("2", "4", "8G", "16G"), "gpu": ("8", "16", "64G", "128G")}

DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


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


def build_pipeline(cluster: bool = True, defaults_profile: str = "qwen3-8b", repo_url: str = DEFAULT_REPO_URL):
    """Return the pipeline function; ``cluster`` switches the cluster-only operations on."""
    cfg = load_config(profile=defaults_profile)

    def steps(profile: str, repo_url: str, revision: str, data_path: str, dvc_remote: str, teacher_url: str,
              teacher_model: str, judge_url: str, judge_threshold: float, max_records_per_dataset: int, base_model: str,
              use_lora: bool, sft_epochs: float, sft_learning_rate: float, sft_max_steps: int, grpo_group_size: int,
              grpo_learning_rate: float, grpo_max_steps: int, use_vllm: bool, eval_suite: str, eval_limit: int,
              registry_uri: str, min_gate_value: float, workspace_dir: str,
              multi_node: Any = None, trainjob: dict[str, Any] | None = None) -> dict[str, dsl.PipelineTask]:
        fetch = fetch_data(repo_url=repo_url, revision=revision, data_path=data_path, dvc_remote=dvc_remote)
        prepared = fetch.outputs["prepared"]
        synth = synthesize_cot(prepared=prepared, profile=profile, teacher_url=teacher_url, teacher_model=teacher_model,
                               judge_url=judge_url, judge_threshold=judge_threshold,
                               max_records_per_dataset=max_records_per_dataset)
        validate = validate_data(prepared=prepared, cot=synth.outputs["cot"], profile=profile)
        sft_args = dict(cot=synth.outputs["cot"], prepared=prepared, profile=profile, base_model=base_model,
                        use_lora=use_lora, epochs=sft_epochs, learning_rate=sft_learning_rate, max_steps=sft_max_steps)
        extra: dict[str, dsl.PipelineTask] = {}
        if multi_node is None:  # local variant: SFT always runs in the step's own process
            sft = train_sft(**sft_args, workspace_dir=workspace_dir).after(validate)
            sft_model = sft.outputs["model"]
        else:  # cluster variant: a TrainJob on several GPU nodes when the run asks for it
            with dsl.If(multi_node == True, name="multi-node-sft"):  # noqa: E712 (a pipeline condition)
                submit = submit_trainjob(**sft_args, **trainjob, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                         namespace="", shared_dir=SHARED_MOUNT, poll_seconds=30.0).after(validate)
            with dsl.Else(name="single-pod-sft"):
                sft = train_sft(**sft_args, workspace_dir=workspace_dir).after(validate)
            sft_model = dsl.OneOf(submit.outputs["model"], sft.outputs["model"])
            extra["submit_trainjob"] = submit
        grpo = train_grpo(sft_model=sft_model, prepared=prepared, profile=profile, group_size=grpo_group_size,
                          learning_rate=grpo_learning_rate, max_steps=grpo_max_steps, use_lora=use_lora,
                          use_vllm=use_vllm, workspace_dir=workspace_dir)
        evaluate = evaluate_model(model=grpo.outputs["model"], prepared=prepared, profile=profile, suite=eval_suite,
                                  limit=eval_limit)
        promote = promote_model(model=grpo.outputs["model"], report_json=evaluate.outputs["report_json"],
                                profile=profile, registry_uri=registry_uri, min_gate_value=min_gate_value)
        promote.set_caching_options(False)  # the champion may have moved since a cached run
        return {"fetch": fetch, "synthesize": synth, "validate": validate, "sft": sft, "grpo": grpo,
                "evaluate": evaluate, "promote": promote, **extra}

    common = dict(
        profile=cfg.profile, revision="", data_path="work/data", dvc_remote="", teacher_url=cfg.cot.teacher_url or "",
        teacher_model=cfg.cot.teacher_model, judge_url=cfg.cot.judge_url or "", judge_threshold=cfg.cot.judge_threshold,
        max_records_per_dataset=cfg.cot.max_records_per_dataset or 0, base_model=cfg.model.base_model,
        use_lora=cfg.sft.finetune == "lora", sft_epochs=cfg.sft.num_train_epochs, sft_learning_rate=cfg.sft.learning_rate,
        sft_max_steps=max(cfg.sft.max_steps, 0), grpo_group_size=cfg.grpo.num_generations,
        grpo_learning_rate=cfg.grpo.learning_rate, grpo_max_steps=max(cfg.grpo.max_steps, 0), use_vllm=cfg.grpo.use_vllm,
        eval_suite="all", eval_limit=cfg.eval.limit or 0, registry_uri=cfg.promotion.registry_uri,
        min_gate_value=cfg.promotion.min_gate_value,
    )

    if not cluster:
        @dsl.pipeline(name=f"{PIPELINE_NAME}-local", description="ReasoningNER end to end, local variant (kfp.local).")
        def local_pipeline(
            profile: str = common["profile"], repo_url: str = repo_url, revision: str = common["revision"],
            data_path: str = common["data_path"], dvc_remote: str = common["dvc_remote"],
            teacher_url: str = common["teacher_url"], teacher_model: str = common["teacher_model"],
            judge_url: str = common["judge_url"], judge_threshold: float = common["judge_threshold"],
            max_records_per_dataset: int = common["max_records_per_dataset"], base_model: str = common["base_model"],
            use_lora: bool = common["use_lora"], sft_epochs: float = common["sft_epochs"],
            sft_learning_rate: float = common["sft_learning_rate"], sft_max_steps: int = common["sft_max_steps"],
            grpo_group_size: int = common["grpo_group_size"], grpo_learning_rate: float = common["grpo_learning_rate"],
            grpo_max_steps: int = common["grpo_max_steps"], use_vllm: bool = common["use_vllm"],
            eval_suite: str = common["eval_suite"], eval_limit: int = common["eval_limit"],
            registry_uri: str = common["registry_uri"], min_gate_value: float = common["min_gate_value"],
        ) -> str:
            tasks = steps(profile, repo_url, revision, data_path, dvc_remote, teacher_url, teacher_model, judge_url,
                          judge_threshold, max_records_per_dataset, base_model, use_lora, sft_epochs, sft_learning_rate,
                          sft_max_steps, grpo_group_size, grpo_learning_rate, grpo_max_steps, use_vllm, eval_suite,
                          eval_limit, registry_uri, min_gate_value, "")
            return tasks["promote"].outputs["decision"]

        return local_pipeline

    from components.deploy_model.component import deploy_model

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="ReasoningNER (arXiv 2511.11978): CoT synthesis, CoT tuning (SFT), reasoning enhancement (GRPO), "
        "evaluation, promotion gate and KServe deployment. Settings default to the profile's configuration.",
    )
    def cluster_pipeline(
        profile: str = common["profile"], repo_url: str = repo_url, revision: str = common["revision"],
        data_path: str = common["data_path"], dvc_remote: str = common["dvc_remote"],
        teacher_url: str = common["teacher_url"], teacher_model: str = common["teacher_model"],
        judge_url: str = common["judge_url"], judge_threshold: float = common["judge_threshold"],
        max_records_per_dataset: int = common["max_records_per_dataset"], base_model: str = common["base_model"],
        use_lora: bool = common["use_lora"], sft_epochs: float = common["sft_epochs"],
        sft_learning_rate: float = common["sft_learning_rate"], sft_max_steps: int = common["sft_max_steps"],
        grpo_group_size: int = common["grpo_group_size"], grpo_learning_rate: float = common["grpo_learning_rate"],
        grpo_max_steps: int = common["grpo_max_steps"], use_vllm: bool = common["use_vllm"],
        eval_suite: str = common["eval_suite"], eval_limit: int = common["eval_limit"],
        registry_uri: str = "s3://reasoning-ner/registry", min_gate_value: float = common["min_gate_value"],
        accelerator_type: str = "nvidia.com/gpu", gpus_per_step: int = 1,
        gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR, gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
        workspace_size: str = "200Gi", workspace_storage_class: str = "standard",
        deploy_namespace: str = "reasoning-ner", inference_service: str = "reasoning-ner", canary_percent: int = 10,
        multi_node: bool = False, train_nodes: int = 2, sft_launcher: str = "accelerate",
        shared_pvc: str = "reasoning-ner-shared", trainjob_runtime: str = "torch-distributed",
        trainjob_timeout_hours: float = 72.0,
    ) -> str:
        pvc = kubernetes.CreatePVC(pvc_name_suffix="-rner-workspace", access_modes=["ReadWriteOnce"],
                                   size=workspace_size, storage_class_name=workspace_storage_class)
        tasks = steps(profile, repo_url, revision, data_path, dvc_remote, teacher_url, teacher_model, judge_url,
                      judge_threshold, max_records_per_dataset, base_model, use_lora, sft_epochs, sft_learning_rate,
                      sft_max_steps, grpo_group_size, grpo_learning_rate, grpo_max_steps, use_vllm, eval_suite,
                      eval_limit, registry_uri, min_gate_value, WORKSPACE_MOUNT, multi_node=multi_node,
                      trainjob=dict(num_nodes=train_nodes, gpus_per_node=gpus_per_step, accelerator_type=accelerator_type,
                                    node_selector=gpu_node_selector, tolerations=gpu_tolerations, shared_pvc=shared_pvc,
                                    runtime=trainjob_runtime, timeout_hours=trainjob_timeout_hours,
                                    launcher=sft_launcher))
        _resources(tasks["submit_trainjob"], "cpu")
        kubernetes.mount_pvc(tasks["submit_trainjob"], pvc_name=shared_pvc, mount_path=SHARED_MOUNT)
        _secrets(tasks["fetch"], "git", "s3")
        _secrets(tasks["synthesize"], "teacher")
        for name in ("fetch", "synthesize", "validate", "promote"):
            _resources(tasks[name], "cpu")
        for name in ("sft", "grpo", "evaluate"):
            _gpu_pool(tasks[name], accelerator_type, gpus_per_step, gpu_node_selector, gpu_tolerations)
            _secrets(tasks[name], "hf")
        for name in ("sft", "grpo"):
            kubernetes.mount_pvc(tasks[name], pvc_name=pvc.outputs["name"], mount_path=WORKSPACE_MOUNT)
        _secrets(tasks["promote"], "s3")
        kubernetes.DeletePVC(pvc_name=pvc.outputs["name"]).after(tasks["grpo"])
        with dsl.If(tasks["promote"].outputs["decision"] == "promoted", name="promoted"):
            deploy = deploy_model(model_uri=tasks["promote"].outputs["model_uri"], namespace=deploy_namespace,
                                  inference_service=inference_service, canary_percent=canary_percent)
            deploy.set_caching_options(False)
            _resources(deploy, "cpu")
            _secrets(deploy, "s3")
        return tasks["promote"].outputs["decision"]

    return cluster_pipeline


def compile_pipeline(path: Path = COMPILED) -> Path:
    """Compile the cluster variant (the one committed file) and refresh the chart's copy."""
    compiler.Compiler().compile(build_pipeline(cluster=True), str(path))
    if path == COMPILED and CHART_COPY.parent.is_dir():
        CHART_COPY.write_bytes(path.read_bytes())
    return path
