"""`fetch_dataset` end to end against a real git + DVC repository built in a temp folder.

One module fixture builds it: `git init`, `dvc init`, a local-directory default remote, a
one-stage pipeline (a small python script writing JSONL under an already git-ignored `work/`,
as in the project), `dvc repro`, commit, `dvc push`; then a params change, a second commit and
push. Tests fetch from a fresh `git clone` (no DVC cache: the data must come from the remote)
and from the origin by `file://` URL, and check content, commit sha and the md5 in dvc.lock.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reasoning_ner.lineage import LINEAGE_FILE, LineageError, _with_env_token, fetch_dataset, read_lineage, redact_url

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}

GEN_SCRIPT = """\
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["gen"]
rows = [{"id": f"r{i}", "text": f"{p['tag']} sentence {i}", "entities": []} for i in range(p["n"])]
pathlib.Path("work/shards").mkdir(parents=True, exist_ok=True)
pathlib.Path("work/data.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
for k in range(2):
    pathlib.Path(f"work/shards/{k}.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows[k::2]))
"""


def sh(*args: str, cwd: Path) -> str:
    res = subprocess.run(list(args), cwd=cwd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout.strip()


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def lock_md5(repo: Path, out: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["gen"]["outs"] if o["path"] == out)


@dataclass
class Origin:
    origin: Path
    storage: Path
    clone: Path
    sha1: str
    sha2: str
    md5_1: str
    md5_2: str
    dir_md5_1: str
    content1: str
    content2: str


@pytest.fixture(scope="module", autouse=True)
def dvc_site_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep DVC's per-repo site cache (normally /var/tmp/dvc) inside the test's temp folder."""
    path = str(tmp_path_factory.mktemp("dvc-site-cache"))
    old = os.environ.get("DVC_SITE_CACHE_DIR")
    os.environ["DVC_SITE_CACHE_DIR"] = ENV["DVC_SITE_CACHE_DIR"] = path
    yield
    if old is None:
        os.environ.pop("DVC_SITE_CACHE_DIR", None)
    else:
        os.environ["DVC_SITE_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, dvc_site_cache: None) -> Origin:
    base = tmp_path_factory.mktemp("lineage")
    repo, storage, clone = base / "origin", base / "storage", base / "clone"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.name", "Lineage Test", cwd=repo)
    sh("git", "config", "user.email", "lineage@example.invalid", cwd=repo)
    sh("git", "config", "commit.gpgsign", "false", cwd=repo)
    dvc("init", "-q", cwd=repo)
    # Relative, as in the project: resolves to <base>/storage from the origin and from a clone beside it.
    dvc("remote", "add", "-d", "local", "../storage", cwd=repo)
    (repo / ".gitignore").write_text("work/\n")
    (repo / "gen.py").write_text(GEN_SCRIPT)
    (repo / "params.yaml").write_text(yaml.safe_dump({"gen": {"n": 3, "tag": "first"}}))
    stage = {
        "cmd": f"{shlex.quote(sys.executable)} gen.py",
        "deps": ["gen.py"],
        "params": ["gen.n", "gen.tag"],
        "outs": ["work/data.jsonl", "work/shards"],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gen": stage}}, sort_keys=False))

    def commit(message: str) -> str:
        dvc("repro", "-q", cwd=repo)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-q", "-m", message, cwd=repo)
        dvc("push", "-q", cwd=repo)
        return sh("git", "rev-parse", "HEAD", cwd=repo)

    sha1 = commit("first data")
    md5_1, dir_md5_1 = lock_md5(repo, "work/data.jsonl"), lock_md5(repo, "work/shards")
    content1 = (repo / "work" / "data.jsonl").read_text()
    # The parent work/ is git-ignored already: DVC adds no .gitignore of its own and git sees nothing.
    assert not (repo / "work" / ".gitignore").exists()
    assert sh("git", "status", "--porcelain", cwd=repo) == ""

    (repo / "params.yaml").write_text(yaml.safe_dump({"gen": {"n": 4, "tag": "second"}}))
    sha2 = commit("second data")
    md5_2 = lock_md5(repo, "work/data.jsonl")
    content2 = (repo / "work" / "data.jsonl").read_text()

    sh("git", "clone", "-q", str(repo), str(clone), cwd=base)
    assert not (clone / ".dvc" / "cache").exists()  # a fresh clone: data can only come from the remote
    return Origin(repo, storage, clone, sha1, sha2, md5_1, md5_2, dir_md5_1, content1, content2)


def test_fetch_from_fresh_clone_records_commit_and_lock_md5(origin: Origin, tmp_path: Path) -> None:
    lin = fetch_dataset(str(origin.clone), origin.sha1, "work/data.jsonl", tmp_path)
    assert (tmp_path / "data.jsonl").read_text() == origin.content1
    assert lin["commit"] == origin.sha1 and lin["rev"] == origin.sha1
    assert lin["md5"] == origin.md5_1
    assert lin["outs"] == [
        {"path": "work/data.jsonl", "md5": origin.md5_1, "hash": "md5", "size": len(origin.content1),
         "nfiles": None, "stage": "gen", "dvcfile": "dvc.yaml"}
    ]
    assert lin["files"] == [{"path": "data.jsonl", "size": len(origin.content1), "md5": origin.md5_1, "dvc": True}]
    assert lin["remote"] == {"name": "local", "url": str(origin.storage)}
    assert lin["repo"] == str(origin.clone) and lin["path"] == "work/data.jsonl"
    assert lin["dvc_version"] and lin["fetched_at"].endswith("+00:00")
    on_disk = json.loads((tmp_path / LINEAGE_FILE).read_text())
    assert on_disk == lin == read_lineage(tmp_path)


def test_new_commit_new_md5_and_old_rev_still_old_content(origin: Origin, tmp_path: Path) -> None:
    new = fetch_dataset(str(origin.clone), None, "work/data.jsonl", tmp_path / "head")  # None = HEAD
    assert new["commit"] == origin.sha2 and new["rev"] is None
    assert new["md5"] == origin.md5_2 != origin.md5_1
    assert (tmp_path / "head" / "data.jsonl").read_text() == origin.content2
    old = fetch_dataset(str(origin.clone), "HEAD~1", "work/data.jsonl", tmp_path / "old")
    assert old["commit"] == origin.sha1 and old["md5"] == origin.md5_1
    assert (tmp_path / "old" / "data.jsonl").read_text() == origin.content1
    # Fetching again into the same folder replaces the data and the record.
    fetch_dataset(str(origin.clone), origin.sha2, "work/data.jsonl", tmp_path / "old")
    assert (tmp_path / "old" / "data.jsonl").read_text() == origin.content2
    assert read_lineage(tmp_path / "old")["commit"] == origin.sha2


def test_fetch_directory_by_git_url_with_explicit_remote(origin: Origin, tmp_path: Path) -> None:
    # By URL DVC clones into a temp folder, where the repo's relative remote means nothing:
    # name the storage explicitly.
    lin = fetch_dataset(origin.origin.as_uri(), origin.sha1, "work/shards", tmp_path, remote=str(origin.storage))
    assert lin["commit"] == origin.sha1 and lin["md5"] == origin.dir_md5_1 and lin["md5"].endswith(".dir")
    assert [f["path"] for f in lin["files"]] == ["shards/0.jsonl", "shards/1.jsonl"]
    got = (tmp_path / "shards" / "0.jsonl").read_text() + (tmp_path / "shards" / "1.jsonl").read_text()
    assert sorted(got.splitlines()) == sorted(origin.content1.splitlines())
    assert lin["remote"]["url"] == str(origin.storage)
    # One file inside a tracked directory: its own md5, and the directory out it belongs to.
    one = fetch_dataset(str(origin.clone), origin.sha1, "work/shards/1.jsonl", tmp_path / "one")
    assert one["outs"][0]["path"] == "work/shards" and one["outs"][0]["md5"] == origin.dir_md5_1
    assert one["md5"] == one["files"][0]["md5"] and len(one["md5"]) == 32


def test_errors_name_repo_rev_and_path(origin: Origin, tmp_path: Path) -> None:
    clone = str(origin.clone)
    with pytest.raises(ValueError, match=r"unknown git revision 'no-such-rev' in .*clone.*work/data.jsonl"):
        fetch_dataset(clone, "no-such-rev", "work/data.jsonl", tmp_path)
    with pytest.raises(ValueError, match=r"'params.yaml' in .*clone at rev HEAD~1 .*tracked by git, not by DVC"):
        fetch_dataset(clone, "HEAD~1", "params.yaml", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'work/nope.jsonl' in .*clone at rev HEAD .*no such file"):
        fetch_dataset(clone, "HEAD", "work/nope.jsonl", tmp_path)
    with pytest.raises(ValueError, match=r"DVC remote 'nope' is not configured"):
        fetch_dataset(clone, "HEAD", "work/data.jsonl", tmp_path, remote="nope")
    empty = tmp_path / "empty-storage"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"'work/data.jsonl' in .*clone at rev HEAD.*neither the DVC cache nor the remote.*dvc push"):
        fetch_dataset(clone, "HEAD", "work/data.jsonl", tmp_path, remote=str(empty))
    # By URL without --remote: the repo's relative local remote cannot be reached, and we say so.
    with pytest.raises(FileNotFoundError, match=r"file://.*cannot be reached; pass --remote"):
        fetch_dataset(origin.origin.as_uri(), origin.sha1, "work/data.jsonl", tmp_path)
    with pytest.raises(ValueError, match=r"stay inside"):
        fetch_dataset(clone, "HEAD", "../outside.jsonl", tmp_path)
    assert not (tmp_path / LINEAGE_FILE).exists()  # nothing half-written on failure


def test_remote_with_credentials_in_config_is_refused(origin: Origin, tmp_path: Path) -> None:
    repo = tmp_path / "creds"
    sh("git", "clone", "-q", str(origin.origin), str(repo), cwd=tmp_path)
    dvc("remote", "add", "--local", "s3", "s3://bucket/path", cwd=repo)
    dvc("remote", "modify", "--local", "s3", "secret_access_key", "not-a-real-secret", cwd=repo)
    with pytest.raises(ValueError, match=r"remote 's3' holds credentials .*secret_access_key.*environment"):
        fetch_dataset(str(repo), "HEAD", "work/data.jsonl", tmp_path / "out", remote="s3")


def test_read_lineage_errors_and_url_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="no lineage record"):
        read_lineage(tmp_path)
    (tmp_path / LINEAGE_FILE).write_text('{"repo": "x"}')
    with pytest.raises(LineageError, match="missing rev, commit"):
        read_lineage(tmp_path)
    assert redact_url("https://user:tok@git.example/org/repo.git") == "https://git.example/org/repo.git"
    assert redact_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    msg = "cannot clone https://x-access-token:s3cr3t@git.example/org/repo.git: 403"
    assert "s3cr3t" not in redact_url(msg)
    # A private https repo takes its token from the environment, never from a file.
    monkeypatch.setenv("RNER_GIT_TOKEN", "s3cr3t")
    assert _with_env_token("https://git.example/org/repo.git") == "https://x-access-token:s3cr3t@git.example/org/repo.git"
    assert _with_env_token("https://me:other@git.example/r.git") == "https://me:other@git.example/r.git"
    assert _with_env_token("git@git.example:org/repo.git") == "git@git.example:org/repo.git"
