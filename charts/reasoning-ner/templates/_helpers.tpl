{{/*
Shared helpers. The serving objects (InferenceService, serving ServiceAccount, NetworkPolicy,
ScaledObjects) mirror reasoning_ner.k8s.inference_service exactly: same names, labels, field order
does not matter but every field and list order does (tests/helm compares them with the builder).
*/}}

{{/* InferenceService name: serving.name, else the release name. */}}
{{- define "rner.name" -}}
{{- .Values.serving.name | default .Release.Name -}}
{{- end -}}

{{/* Namespace of the serving objects: serving.namespace, else the release namespace. */}}
{{- define "rner.namespace" -}}
{{- .Values.serving.namespace | default .Release.Namespace | default "default" -}}
{{- end -}}

{{/* Namespace where pipeline runs execute (required; rner.validate explains an empty one). */}}
{{- define "rner.kfpNamespace" -}}
{{- .Values.kfp.namespace -}}
{{- end -}}

{{/* Namespace of the TrainJobs of multi-node training: the runs' own (the pipeline creates them
there and the shared PVC lives there; rner.validate refuses another multiNode.namespace). */}}
{{- define "rner.trainNamespace" -}}
{{- .Values.multiNode.namespace | default (include "rner.kfpNamespace" .) -}}
{{- end -}}

{{/* The namespaces that need the Secrets and pull Secrets: serving and the runs' (once each). */}}
{{- define "rner.secretNamespaces" -}}
{{- list (include "rner.namespace" .) (include "rner.kfpNamespace" .) | uniq | toJson -}}
{{- end -}}

{{/* serving.autoscaler with the mode's default (knative: kpa, standard: none). */}}
{{- define "rner.autoscaler" -}}
{{- $a := index .Values.serving "autoscaler" -}}
{{- if $a -}}{{ $a }}{{- else if eq .Values.serving.mode "knative" -}}kpa{{- else -}}none{{- end -}}
{{- end -}}

{{/* The tag of the project's images: images.tag, else the chart's appVersion. */}}
{{- define "rner.imageTag" -}}
{{- .Values.images.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* A project image: (list $ "serve") -> registry/repository:tag[@digest]. */}}
{{- define "rner.image" -}}
{{- $root := index . 0 -}}
{{- $img := index $root.Values.images (index . 1) -}}
{{- $ref := printf "%s/%s:%s" $root.Values.images.registry $img.repository (include "rner.imageTag" $root) -}}
{{- if $img.digest -}}{{- $ref = printf "%s@%s" $ref $img.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* The project images by their reasoning_ner.images name -> the key under .Values.images. */}}
{{- define "rner.imageKeys" -}}
{{- dict "cpu" "cpu" "train-gpu" "trainGpu" "serve" "serve" | toJson -}}
{{- end -}}

{{/* The compiled pipeline as the chart registers it: every project image reference the compiler
wrote (reasoning_ner.images.image(name) = ghcr.io/reasoning-ner/reasoning-ner-<name>:<appVersion>;
tests keep this prefix equal to images.REGISTRY) rewritten to images.registry/<repository>:<tag>[@digest],
exactly as reasoning_ner.images.rewrite_references does for `rner pipeline submit`. */}}
{{- define "rner.pipelineYaml" -}}
{{- $text := .Files.Get "files/pipeline.yaml" -}}
{{- range $name, $key := include "rner.imageKeys" . | fromJson -}}
{{- $text = replace (printf "ghcr.io/reasoning-ner/reasoning-ner-%s:%s" $name $.Chart.AppVersion) (include "rner.image" (list $ $key)) $text -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* docker-registry pull Secrets: (list of names) -> an imagePullSecrets block, or nothing. */}}
{{- define "rner.imagePullSecrets" -}}
{{- with . }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Pull Secrets of the serving ServiceAccount: serving.imagePullSecrets, null = images.pullSecrets. */}}
{{- define "rner.servingPullSecrets" -}}
{{- $own := index .Values.serving "imagePullSecrets" -}}
{{- if kindIs "invalid" $own -}}{{- $own = .Values.images.pullSecrets -}}{{- end -}}
{{- $own | default (list) | toJson -}}
{{- end -}}

{{/* The serving.kserve.io/s3-* annotations KServe's storage initializer reads (the builder's
s3_annotations): on the S3 Secret, and on the serving ServiceAccount only with an IRSA role. */}}
{{- define "rner.s3Annotations" -}}
{{- $st := .Values.serving.storage -}}
{{- $a := dict -}}
{{- with index $st "s3Endpoint" }}{{ $_ := set $a "serving.kserve.io/s3-endpoint" (toString .) }}{{ end -}}
{{- $_ := set $a "serving.kserve.io/s3-usehttps" (ternary "1" "0" $st.s3UseHttps) -}}
{{- with index $st "s3Region" }}{{ $_ := set $a "serving.kserve.io/s3-region" (toString .) }}{{ end -}}
{{- $_ := set $a "serving.kserve.io/s3-verifyssl" (ternary "1" "0" $st.s3VerifySsl) -}}
{{- toJson $a -}}
{{- end -}}

{{/* The endpoint as a URL (the builder's s3_endpoint_url), "" for AWS. */}}
{{- define "rner.s3EndpointUrl" -}}
{{- $st := .Values.serving.storage -}}
{{- with index $st "s3Endpoint" -}}
{{- if regexMatch "(?i)^https?://" . -}}{{ . }}{{- else -}}{{ ternary "https" "http" $st.s3UseHttps }}://{{ . }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The transformer's image: serving.transformer.image, else the project's serve image. */}}
{{- define "rner.transformerImage" -}}
{{- .Values.serving.transformer.image | default (include "rner.image" (list . "serve")) -}}
{{- end -}}

{{/* Labels of the builder's objects: (list $ component) -> serving.labels + name + component. */}}
{{- define "rner.labels" -}}
{{- $root := index . 0 -}}
{{- $labels := dict -}}
{{- range $k, $v := ($root.Values.serving.labels | default dict) -}}
{{- $_ := set $labels $k $v -}}
{{- end -}}
{{- $_ := set $labels "app.kubernetes.io/name" (include "rner.name" $root) -}}
{{- $_ := set $labels "app.kubernetes.io/component" (index . 1) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* Labels of the chart's own objects: the builder's labels plus Helm's. */}}
{{- define "rner.chartLabels" -}}
{{- $root := index . 0 -}}
{{- include "rner.labels" . }}
app.kubernetes.io/instance: {{ $root.Release.Name | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service | quote }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | quote }}
{{- end -}}

{{/* ServiceAccount names of the chart's own workloads. */}}
{{- define "rner.pipelineRunnerSA" -}}
{{- .Values.serviceAccounts.pipelineRunner.name | default (printf "%s-pipeline-runner" (include "rner.name" .)) -}}
{{- end -}}
{{- define "rner.registrationSA" -}}
{{- .Values.serviceAccounts.registration.name | default (printf "%s-registration" (include "rner.name" .)) -}}
{{- end -}}
{{- define "rner.testSA" -}}
{{- printf "%s-helm-test" (include "rner.name" .) -}}
{{- end -}}

{{/* The pipeline version name: pipeline.versionName, else <appVersion>-<first 12 hex of the sha256
of the registered YAML> (reasoning_ner.images.content_version), so a pipeline whose content or image
references changed becomes a new version and an unchanged one is skipped by the registration Job. */}}
{{- define "rner.pipelineVersion" -}}
{{- .Values.pipeline.versionName | default (printf "%s-%s" .Chart.AppVersion (include "rner.pipelineYaml" . | sha256sum | trunc 12)) -}}
{{- end -}}

{{/* Seconds of a Go duration such as 1800s, 30m, 1h30m (what the builder's parse_duration accepts). */}}
{{- define "rner.durationSeconds" -}}
{{- $d := toString . -}}
{{- if or (eq $d "") (not (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $d)) -}}
{{- fail (printf "%q is not a duration like 600s, 10m or 1h" $d) -}}
{{- end -}}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | atoi -}}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | atoi -}}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | atoi -}}
{{- add (mul $h 3600) (mul $m 60) $s -}}
{{- end -}}

{{/* A Kubernetes quantity as a float (cores or bytes), for request <= limit checks. */}}
{{- define "rner.quantity" -}}
{{- $q := toString . -}}
{{- $num := regexFind "^[0-9.]+([eE][-+]?[0-9]+)?" $q -}}
{{- $suffix := trimPrefix $num $q -}}
{{- $factors := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- if not (hasKey $factors $suffix) -}}{{- fail (printf "%q is not a Kubernetes quantity" $q) -}}{{- end -}}
{{- mulf (float64 $num) (index $factors $suffix) -}}
{{- end -}}

{{/* A float the way Python prints it (0.9 -> 0.9, 1 -> 1.0), so args equal the builder's. */}}
{{- define "rner.pyFloat" -}}
{{- $f := float64 . -}}
{{- if eq $f (floor $f) -}}{{ printf "%.1f" $f }}{{- else -}}{{ $f }}{{- end -}}
{{- end -}}

{{/* An HTTP probe on the serving port (the builder's _probe). */}}
{{- define "rner.probe" -}}
httpGet:
  path: {{ .path }}
  port: 8080
{{- if .initialDelaySeconds }}
initialDelaySeconds: {{ .initialDelaySeconds | int }}
{{- end }}
periodSeconds: {{ .periodSeconds | int }}
timeoutSeconds: {{ .timeoutSeconds | int }}
failureThreshold: {{ .failureThreshold | int }}
{{- end -}}

{{/* Requests and limits: (list resources gpus gpuResourceName). */}}
{{- define "rner.resources" -}}
{{- $r := index . 0 -}}
{{- $gpus := index . 1 | int -}}
{{- $gpu := index . 2 -}}
requests:
  cpu: {{ $r.cpuRequest | quote }}
  memory: {{ $r.memoryRequest | quote }}
  {{- if $gpus }}
  {{ $gpu }}: {{ $gpus }}
  {{- end }}
limits:
  cpu: {{ $r.cpuLimit | quote }}
  memory: {{ $r.memoryLimit | quote }}
  {{- if $gpus }}
  {{ $gpu }}: {{ $gpus }}
  {{- end }}
{{- end -}}

{{/* Container security context of the serving containers (the builder's _container_security). */}}
{{- define "rner.servingSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . | int }}
runAsGroup: {{ . | int }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment: (list defaults extra) where defaults is a list of (list name value) pairs;
extra overrides a default by name, new names follow in sorted order (the builder's _env). */}}
{{- define "rner.env" -}}
{{- $defaults := index . 0 -}}
{{- $extra := index . 1 | default dict -}}
{{- $seen := list -}}
{{- range $defaults }}
{{- $k := index . 0 }}
{{- $seen = append $seen $k }}
- name: {{ $k }}
  value: {{ (hasKey $extra $k) | ternary (index $extra $k) (index . 1) | toString | quote }}
{{- end }}
{{- range $k, $v := $extra }}
{{- if not (has $k $seen) }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The model to serve: {"uri": ..., "version": ...}. With deploy.keepLiveModel the live
InferenceService's storageUri and model-version annotation win over the values (lookup returns
nothing offline and on a first install, then serving.storage.storageUri applies). Against a cluster
without KServe's CRDs the lookup fails, as the InferenceService itself would. */}}
{{- define "rner.model" -}}
{{- $uri := .Values.serving.storage.storageUri -}}
{{- $version := "" -}}
{{- if .Values.deploy.keepLiveModel -}}
{{- $live := lookup "serving.kserve.io/v1beta1" "InferenceService" (include "rner.namespace" .) (include "rner.name" .) -}}
{{- if $live -}}
{{- $liveUri := dig "spec" "predictor" "model" "storageUri" "" $live -}}
{{- if $liveUri -}}{{- $uri = $liveUri -}}{{- end -}}
{{- $version = dig "metadata" "annotations" "reasoning-ner.io/model-version" "" $live -}}
{{- end -}}
{{- end -}}
{{- dict "uri" $uri "version" $version | toJson -}}
{{- end -}}

{{/* Pod security context of the chart's own pods (registration Job, helm test). */}}
{{- define "rner.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser | int }}
runAsGroup: {{ .Values.podSecurity.runAsGroup | int }}
fsGroup: {{ .Values.podSecurity.runAsGroup | int }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of the chart's own containers. */}}
{{- define "rner.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser | int }}
runAsGroup: {{ .Values.podSecurity.runAsGroup | int }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Kubeflow Pipelines token: a projected ServiceAccount token for the KFP API's audience. */}}
{{- define "rner.kfpTokenVolume" -}}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.kfp.tokenAudience | quote }}
          expirationSeconds: {{ .Values.kfp.tokenExpirationSeconds | int }}
{{- end -}}
