from kfp import dsl
from kfp.dsl import Dataset, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def fetch_data(repo_url: str, revision: str, data_path: str, dvc_remote: str, prepared: Output[Dataset]) -> str:
    """Fetch the DVC-versioned prepared datasets at a git revision.

    Reads `data_path` (the DVC `prepare` stage output) of the project repository at `revision`
    through dvc.api and records the lineage (repository, resolved commit, DVC md5) in the
    artifact's metadata and in lineage.json, so every model knows exactly which data trained it.
    Private repositories and S3/MinIO remotes take credentials from the environment
    (RNER_GIT_TOKEN, AWS_*), mounted from Kubernetes Secrets.

    Args:
        repo_url: Git URL (or local path) of the project repository.
        revision: Git revision (commit, branch or tag); empty = the default branch / HEAD.
        data_path: DVC-tracked folder of prepared canonical JSONL, e.g. work/data.
        dvc_remote: DVC remote name or URL (e.g. s3://bucket/dvc); empty = the repository's default.

    Returns:
        The resolved git commit.
    """
    from reasoning_ner.lineage import fetch_dataset

    lineage = fetch_dataset(repo_url, revision or None, data_path, prepared.path, remote=dvc_remote or None)
    prepared.metadata.update({"git_commit": lineage["commit"], "dvc_md5": lineage["md5"], "data_path": data_path,
                              "files": lineage["nfiles"]})
    return lineage["commit"]
