"""A small read-only access layer to the Kubernetes API over plain HTTP (httpx), for the preflight.

The library does not import the Kubernetes client (project rule), so this module does the little the
preflight needs: find the cluster and the credentials, then GET JSON.

* :func:`load_kubeconfig`: ``KUBECONFIG`` (files merged in order, the first definition of a name
  wins, as kubectl does) or ``~/.kube/config``; the current context (or ``context``); the cluster's
  ``server``, ``certificate-authority(-data)``, ``insecure-skip-tls-verify``, ``tls-server-name`` and
  ``proxy-url``; the user's ``token``/``tokenFile``, ``client-certificate(-data)``/``client-key(-data)``
  and ``exec`` credential plugins (``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``: a
  command printing an ``ExecCredential`` JSON, cached until its ``expirationTimestamp``). Relative
  paths are relative to the kubeconfig file that names them. Legacy ``auth-provider``, basic auth and
  impersonation are refused with a message naming the field.
* :func:`load_in_cluster`: a pod's ServiceAccount token, CA and namespace under
  ``/var/run/secrets/kubernetes.io/serviceaccount`` and ``KUBERNETES_SERVICE_HOST``/``_PORT``; the
  token file is re-read on every request (projected tokens rotate).
* :class:`KubeClient`: ``get(path)``; a non-2xx answer raises :class:`KubeAPIError`
  (:class:`Forbidden` for 403, :class:`NotFound` for 404) carrying the verb and resource that were
  refused, so a caller can say "needs get on secrets in namespace ml".

Every configuration problem raises :class:`KubeConfigError` naming the kubeconfig field or path.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import httpx
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT_S = 60.0


class KubeConfigError(ValueError):
    """The cluster cannot be found or authenticated to; the message names the field or file."""


class KubeAPIError(Exception):
    """A non-2xx answer (or no answer) from the API server for one request."""

    def __init__(self, status: int, path: str, message: str, verb: str = "get") -> None:
        self.status, self.path, self.verb = status, path, verb
        self.resource, self.namespace = resource_of(path)
        super().__init__(f"{verb} {path}: HTTP {status}: {message}" if status else f"{verb} {path}: {message}")

    @property
    def permission(self) -> str:
        """What was refused, e.g. ``get on secrets in namespace ml`` (RBAC wording)."""
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} on {self.resource}{where}"


class Forbidden(KubeAPIError):
    pass


class NotFound(KubeAPIError):
    pass


class Unauthorized(KubeAPIError):
    pass


_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/?]+)")


def resource_of(path: str) -> tuple[str, str | None]:
    """(group-qualified resource, namespace) of an API path: ``/apis/storage.k8s.io/v1/storageclasses/x``
    -> ``("storageclasses.storage.k8s.io", None)``; ``/api/v1/namespaces/ml/secrets/s3`` -> ``("secrets", "ml")``;
    ``/api/v1/namespaces/ml`` -> ``("namespaces", None)``."""
    m = _PATH.match(path.split("?", 1)[0])
    if not m:
        return path, None
    group, ns, resource = m.group("group"), m.group("ns"), m.group("resource")
    if ns is not None and resource == ns:  # /api/v1/namespaces/<name>: the namespace object itself
        ns = None
    return (f"{resource}.{group}" if group else resource), ns


# ------------------------------------------------------------------------------------ access


@dataclass
class ExecPlugin:
    """``users[].user.exec``: a command that prints an ExecCredential (client-go's credential plugins)."""

    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_version: str = "client.authentication.k8s.io/v1"
    install_hint: str | None = None
    where: str = "users[].user.exec"
    base_dir: Path | None = None
    _cached: dict[str, Any] | None = None

    def _resolved_command(self) -> str:
        # kubectl: a command with a path separator is relative to the kubeconfig's folder.
        if os.sep in self.command and not os.path.isabs(self.command) and self.base_dir is not None:
            return str(self.base_dir / self.command)
        return self.command

    def credential(self) -> dict[str, Any]:
        """The ExecCredential's ``status`` (token or client certificate), cached until it expires."""
        if self._cached is not None and not _expired(self._cached.get("expirationTimestamp")):
            return self._cached
        command = self._resolved_command()
        if shutil.which(command) is None and not os.path.isfile(command):
            hint = f"; {self.install_hint.strip()}" if self.install_hint else ""
            raise KubeConfigError(f"{self.where}.command {self.command!r} was not found{hint}")
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            proc = subprocess.run([command, *self.args], env=env, capture_output=True, text=True,
                                  timeout=EXEC_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise KubeConfigError(f"{self.where}: {self.command} did not answer in {EXEC_TIMEOUT_S:.0f} s") from exc
        if proc.returncode != 0:
            raise KubeConfigError(f"{self.where}: {self.command} exited {proc.returncode}: "
                                  f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        try:
            cred = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise KubeConfigError(f"{self.where}: {self.command} did not print an ExecCredential JSON: {exc}") from exc
        if not isinstance(cred, dict) or cred.get("kind") != "ExecCredential":
            raise KubeConfigError(f"{self.where}: {self.command} printed no ExecCredential (kind {cred.get('kind') if isinstance(cred, dict) else None!r})")
        if cred.get("apiVersion") != self.api_version:
            raise KubeConfigError(f"{self.where}: {self.command} answered apiVersion {cred.get('apiVersion')!r}, "
                                  f"the kubeconfig asks for {self.api_version!r}")
        status = cred.get("status") or {}
        if not status.get("token") and not (status.get("clientCertificateData") and status.get("clientKeyData")):
            raise KubeConfigError(f"{self.where}: the ExecCredential from {self.command} has neither status.token "
                                  "nor status.clientCertificateData/clientKeyData")
        self._cached = status
        return status


def _expired(stamp: str | None) -> bool:
    if not stamp:
        return False
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return True
    return when <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=10)


@dataclass
class ClusterAccess:
    """Where the API server is and how to authenticate; :meth:`client` opens a :class:`KubeClient`."""

    server: str
    source: str
    ca_pem: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy: str | None = None
    token: str | None = None
    token_file: Path | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    exec_plugin: ExecPlugin | None = None
    namespace: str | None = None

    def bearer_token(self) -> str | None:
        if self.exec_plugin is not None:
            token = self.exec_plugin.credential().get("token")
            if token:
                return token
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise KubeConfigError(f"cannot read the token file {self.token_file}: {exc}") from exc
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert, key = self.client_cert_pem, self.client_key_pem
        if self.exec_plugin is not None:
            status = self.exec_plugin.credential()
            if status.get("clientCertificateData"):
                cert, key = status["clientCertificateData"].encode(), status["clientKeyData"].encode()
        if cert and key:
            # ssl loads a certificate chain only from files: write them to a private folder for the call.
            with tempfile.TemporaryDirectory(prefix="rner-kube-") as tmp:
                certfile, keyfile = Path(tmp) / "client.crt", Path(tmp) / "client.key"
                certfile.write_bytes(cert)
                keyfile.touch(mode=0o600)
                keyfile.write_bytes(key)
                try:
                    ctx.load_cert_chain(certfile, keyfile)
                except ssl.SSLError as exc:
                    raise KubeConfigError(f"{self.source}: the client certificate/key cannot be loaded: {exc}") from exc
        return ctx

    def client(self, timeout_s: float = 10.0) -> KubeClient:
        return KubeClient(self, timeout_s)


class KubeClient:
    """GET JSON from the API server; errors become :class:`KubeAPIError` subclasses."""

    def __init__(self, access: ClusterAccess, timeout_s: float = 10.0) -> None:
        self.access = access
        verify: ssl.SSLContext | bool = access.ssl_context() if access.server.startswith("https://") else True
        self._http = httpx.Client(base_url=access.server.rstrip("/"), verify=verify, timeout=timeout_s,
                                  proxy=access.proxy, trust_env=True,
                                  headers={"Accept": "application/json", "User-Agent": "reasoning-ner"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def get(self, path: str, verb: str | None = None) -> dict[str, Any]:
        """GET ``path``; ``verb`` names the RBAC verb for messages (default: get, or list for collections)."""
        return self.request("GET", path, verb=verb)

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                params: Mapping[str, str] | None = None, verb: str | None = None) -> dict[str, Any]:
        """``method`` ``path`` with an optional JSON ``body``; the JSON answer, or a :class:`KubeAPIError`."""
        verb = verb or "get"
        headers = {}
        token = self.access.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body).encode()
        extensions = {"sni_hostname": self.access.tls_server_name} if self.access.tls_server_name else None
        try:
            resp = self._http.request(method, path, headers=headers, content=content, params=params, extensions=extensions)
        except httpx.HTTPError as exc:
            raise KubeAPIError(0, path, f"cannot reach the API server {self.access.server}: {exc}", verb) from exc
        if resp.status_code // 100 == 2:
            try:
                return resp.json()
            except ValueError as exc:
                raise KubeAPIError(resp.status_code, path, "the answer is not JSON", verb) from exc
        try:
            message = resp.json().get("message") or resp.text
        except ValueError:
            message = resp.text
        cls = {401: Unauthorized, 403: Forbidden, 404: NotFound}.get(resp.status_code, KubeAPIError)
        raise cls(resp.status_code, path, str(message)[:500], verb)


def default_access(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> ClusterAccess:
    """Where client-go looks: the pod's own ServiceAccount when running in a pod, else the kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None:
        return load_in_cluster()
    return load_kubeconfig(kubeconfig, context)


# ------------------------------------------------------------------------------------ kubeconfig


def kubeconfig_paths(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    if path:
        return [Path(path).expanduser()]
    if env.get("KUBECONFIG"):
        return [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
    return [Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"]


def _named(doc: dict[str, Any], section: str, item: str, source: Path, into: dict[str, tuple[dict[str, Any], Path]]) -> None:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise KubeConfigError(f"{source}: {section} must be a list")
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry:
            raise KubeConfigError(f"{source}: every entry of {section} needs a name")
        into.setdefault(str(entry["name"]), (entry.get(item) or {}, source.parent))


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeConfigError(f"{where} is not valid base64: {exc}") from exc


def _read(path_value: str, base: Path, where: str) -> bytes:
    path = Path(path_value).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"{where}: cannot read {path}: {exc}") from exc


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The YAML mapping in ``path``; ``error`` names ``what`` the file is when it cannot be read or is no mapping."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise error(f"{what} {path} must hold a mapping")
    return doc


#: A kubeconfig section by entry name: the entry's body and the folder relative paths in it start from.
NamedEntries = dict[str, tuple[dict[str, Any], Path]]

#: User fields client-go reads that this client refuses (with why), rather than connect without them.
UNSUPPORTED_USER_FIELDS = (
    ("auth-provider", "the legacy auth-provider plugins are gone from client-go; use an exec plugin "
                      "(gke-gcloud-auth-plugin, kubelogin)"),
    ("username", "basic auth is not supported"), ("password", "basic auth is not supported"),
    ("as", "impersonation is not supported"), ("as-groups", "impersonation is not supported"),
)


def load_kubeconfig(path: str | os.PathLike[str] | None = None, context: str | None = None,
                    env: Mapping[str, str] | None = None) -> ClusterAccess:
    """The access of ``context`` (default: current-context) from the kubeconfig file(s)."""
    paths = kubeconfig_paths(path, env)
    existing = [p for p in paths if p.is_file()]
    if not existing:
        raise KubeConfigError(f"no kubeconfig found (looked at {', '.join(map(str, paths))}); set KUBECONFIG, "
                              "pass --kubeconfig, or run in a pod with --in-cluster")
    clusters, users, contexts, current = _merge_kubeconfigs(existing)
    name = context or current
    files = ", ".join(map(str, existing))
    if not name:
        raise KubeConfigError(f"{files}: current-context is not set; pass --context (contexts: {', '.join(sorted(contexts)) or 'none'})")
    if name not in contexts:
        raise KubeConfigError(f"{files}: contexts[{name!r}] does not exist (contexts: {', '.join(sorted(contexts)) or 'none'})")
    ctx, _ = contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not cluster_name or cluster_name not in clusters:
        raise KubeConfigError(f"{files}: contexts[{name!r}].context.cluster {cluster_name!r} is not in clusters")
    cluster, cluster_base = clusters[cluster_name]
    access = _cluster_access(cluster, cluster_base, f"clusters[{cluster_name!r}].cluster", files,
                             source=f"kubeconfig {files}, context {name}", namespace=ctx.get("namespace") or None)
    if user_name is None:
        return access
    if user_name not in users:
        raise KubeConfigError(f"{files}: contexts[{name!r}].context.user {user_name!r} is not in users")
    user, user_base = users[user_name]
    _add_user_credentials(access, user, user_base, f"users[{user_name!r}].user", files)
    return access


def _merge_kubeconfigs(sources: list[Path]) -> tuple[NamedEntries, NamedEntries, NamedEntries, str | None]:
    """Clusters, users and contexts of all files (the first file naming an entry wins, as in kubectl),
    and the first current-context set."""
    clusters: NamedEntries = {}
    users: NamedEntries = {}
    contexts: NamedEntries = {}
    current = None
    for source in sources:
        doc = read_yaml_mapping(source, "kubeconfig", KubeConfigError)
        _named(doc, "clusters", "cluster", source, clusters)
        _named(doc, "users", "user", source, users)
        _named(doc, "contexts", "context", source, contexts)
        current = current or doc.get("current-context") or None
    return clusters, users, contexts, current


def _cluster_access(cluster: dict[str, Any], base: Path, where: str, files: str, *, source: str,
                    namespace: str | None) -> ClusterAccess:
    """The access a cluster entry gives before any user credentials: server, TLS settings and CA."""
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"{files}: {where}.server is missing")
    if not re.match(r"^https?://", str(server)):
        raise KubeConfigError(f"{files}: {where}.server {server!r} must be an http(s):// URL")
    access = ClusterAccess(server=str(server), source=source, namespace=namespace,
                           insecure=bool(cluster.get("insecure-skip-tls-verify")),
                           tls_server_name=cluster.get("tls-server-name") or None,
                           proxy=cluster.get("proxy-url") or None)
    if cluster.get("certificate-authority-data"):
        access.ca_pem = _b64(str(cluster["certificate-authority-data"]), f"{where}.certificate-authority-data").decode()
    elif cluster.get("certificate-authority"):
        access.ca_pem = _read(str(cluster["certificate-authority"]), base, f"{where}.certificate-authority").decode()
    return access


def _add_user_credentials(access: ClusterAccess, user: dict[str, Any], base: Path, where: str, files: str) -> None:
    """Set the user entry's token, client certificate and exec plugin on ``access``; refuse what is unsupported."""
    for unsupported, why in UNSUPPORTED_USER_FIELDS:
        if user.get(unsupported):
            raise KubeConfigError(f"{files}: {where}.{unsupported}: {why}")
    if user.get("token"):
        access.token = str(user["token"])
    elif user.get("tokenFile"):
        token_path = Path(str(user["tokenFile"])).expanduser()
        access.token_file = token_path if token_path.is_absolute() else base / token_path
    if user.get("client-certificate-data"):
        access.client_cert_pem = _b64(str(user["client-certificate-data"]), f"{where}.client-certificate-data")
    elif user.get("client-certificate"):
        access.client_cert_pem = _read(str(user["client-certificate"]), base, f"{where}.client-certificate")
    if user.get("client-key-data"):
        access.client_key_pem = _b64(str(user["client-key-data"]), f"{where}.client-key-data")
    elif user.get("client-key"):
        access.client_key_pem = _read(str(user["client-key"]), base, f"{where}.client-key")
    if bool(access.client_cert_pem) != bool(access.client_key_pem):
        raise KubeConfigError(f"{files}: {where} has a client certificate without its key (or the reverse)")
    if user.get("exec"):
        access.exec_plugin = _exec_plugin(user["exec"], base, f"{where}.exec", files)


def _exec_plugin(spec: Any, base: Path, where: str, files: str) -> ExecPlugin:
    """The exec credential plugin a user entry names (client.authentication.k8s.io, as kubectl runs it)."""
    if not isinstance(spec, dict) or not spec.get("command"):
        raise KubeConfigError(f"{files}: {where}.command is missing")
    api_version = spec.get("apiVersion") or ""
    if api_version not in EXEC_API_VERSIONS:
        raise KubeConfigError(f"{files}: {where}.apiVersion {api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}")
    env_list = spec.get("env") or []
    try:
        env_vars = {str(e["name"]): str(e["value"]) for e in env_list}
    except (KeyError, TypeError) as exc:
        raise KubeConfigError(f"{files}: {where}.env must be a list of {{name, value}}") from exc
    return ExecPlugin(command=str(spec["command"]), args=[str(a) for a in spec.get("args") or []],
                      env=env_vars, api_version=api_version, install_hint=spec.get("installHint"),
                      where=where, base_dir=base)


# ------------------------------------------------------------------------------------ in-cluster


def load_in_cluster(root: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> ClusterAccess:
    """A pod's own access: its ServiceAccount token and the cluster CA (under ``root``, default
    :data:`SERVICE_ACCOUNT_DIR`), as client-go's InClusterConfig."""
    env = os.environ if env is None else env
    root = Path(root) if root is not None else SERVICE_ACCOUNT_DIR
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    token = root / "token"
    if not token.is_file():
        raise KubeConfigError(f"no ServiceAccount token at {token}: the pod mounts none (automountServiceAccountToken: "
                              "false and no projected serviceAccountToken volume)")
    ca = root / "ca.crt"
    try:
        ca_pem = ca.read_text()
    except OSError as exc:
        raise KubeConfigError(f"cannot read the cluster CA {ca}: {exc}") from exc
    ns_file = root / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.is_file() else None
    server_host = f"[{host}]" if ":" in host else host
    return ClusterAccess(server=f"https://{server_host}:{port}", source=f"in-cluster ServiceAccount ({root})",
                         ca_pem=ca_pem, token_file=token, namespace=namespace)
