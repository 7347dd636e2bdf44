{{/*
Cross-field checks that a JSON schema cannot express, with the messages of
reasoning_ner.k8s.inference_service.settings_problems (the builder refuses the same values), plus
the chart's own consistency checks. All problems are reported at once.
*/}}
{{- define "rner.validate" -}}
{{- $s := .Values.serving -}}
{{- $name := include "rner.name" . -}}
{{- $ns := include "rner.namespace" . -}}
{{- $knative := eq $s.mode "knative" -}}
{{- $autoscaler := include "rner.autoscaler" . -}}
{{- $p := $s.predictor -}}
{{- $t := $s.transformer -}}
{{- $problems := list -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- $problems = append $problems (printf "name '%s' must match ^[a-z]([-a-z0-9]*[a-z0-9])?$ (KServe's InferenceService name format); set serving.name" $name) -}}
{{- end -}}
{{- if gt (len $name) 45 -}}
{{- $problems = append $problems (printf "name '%s' is longer than 45 characters (Knative revision '<name>-transformer-00001' must be a 63-character DNS label); set serving.name" $name) -}}
{{- end -}}
{{- if or (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $ns)) (gt (len $ns) 63) -}}
{{- $problems = append $problems (printf "namespace '%s' is not a DNS label" $ns) -}}
{{- end -}}
{{- if and $knative (ne $autoscaler "kpa") -}}
{{- $problems = append $problems (printf "autoscaler '%s' needs mode 'standard': Knative mode scales with Knative's KPA (containerConcurrency / scaleTarget); KEDA and external autoscalers act on Standard-mode Deployments. With mode 'knative', set autoscaler 'kpa'" $autoscaler) -}}
{{- end -}}
{{- if and (not $knative) (eq $autoscaler "kpa") -}}
{{- $problems = append $problems "autoscaler 'kpa' is Knative's autoscaler; use mode 'knative', or 'none'/'keda'/'external' in Standard mode" -}}
{{- end -}}
{{- if and (not $knative) (not (kindIs "invalid" (index $s.knative "canaryTrafficPercent"))) -}}
{{- $problems = append $problems "canary_traffic_percent is a Knative-mode feature (traffic split between revisions); Standard mode rolls out directly" -}}
{{- end -}}
{{- if lt ($s.scaling.maxReplicas | int) ($s.scaling.minReplicas | int) -}}
{{- $problems = append $problems (printf "scaling.max_replicas %d < min_replicas %d" ($s.scaling.maxReplicas | int) ($s.scaling.minReplicas | int)) -}}
{{- end -}}
{{- if lt ($t.maxReplicas | int) ($t.minReplicas | int) -}}
{{- $problems = append $problems (printf "transformer.max_replicas %d < min_replicas %d" ($t.maxReplicas | int) ($t.minReplicas | int)) -}}
{{- end -}}
{{- if and (not $knative) (eq ($s.scaling.minReplicas | int) 0) -}}
{{- $problems = append $problems "scaling.min_replicas 0 (scale to zero) needs mode 'knative': only Knative's activator holds requests while a replica cold-starts, and a queue metric of zero pods never scales up" -}}
{{- end -}}
{{- if and (not $knative) $t.enabled (eq ($t.minReplicas | int) 0) -}}
{{- $problems = append $problems "transformer.min_replicas 0 needs mode 'knative'" -}}
{{- end -}}
{{- if and (eq ($p.gpus | int) 0) (eq $p.backend "vllm") -}}
{{- $problems = append $problems "predictor.backend 'vllm' needs predictor.gpus >= 1; use backend 'huggingface' on CPU" -}}
{{- end -}}
{{- if and (index $p "reasoningParser") (ne $p.backend "vllm") -}}
{{- $problems = append $problems "predictor.reasoning_parser is a vLLM flag; set it to null with backend 'huggingface'" -}}
{{- end -}}
{{- if hasKey ($p.env | default dict) "PYTHONPATH" -}}
{{- $problems = append $problems "predictor.env sets ['PYTHONPATH'], which KServe's admission webhook refuses" -}}
{{- end -}}
{{- if hasKey ($t.env | default dict) "PYTHONPATH" -}}
{{- $problems = append $problems "transformer.env sets ['PYTHONPATH'], which KServe's admission webhook refuses" -}}
{{- end -}}
{{- if and (index ($t.auth | default dict) "existingSecret") (not $t.enabled) -}}
{{- $problems = append $problems "transformer.auth needs transformer.enabled: the API keys are checked by the NER service; the predictor (KServe's runtime) has no authentication of its own" -}}
{{- end -}}
{{- $logger := $t.logger | default dict -}}
{{- if and (index $logger "enabled") (not $t.enabled) -}}
{{- $problems = append $problems "transformer.logger needs transformer.enabled: the logger belongs on the NER service, which sees sentences, labels and entities (the predictor only rendered prompts)" -}}
{{- end -}}
{{- if and (index $logger "enabled") (not (include "rner.loggerUrl" .)) -}}
{{- $problems = append $problems "serving.transformer.logger.enabled needs a destination: set flywheel.sink.enabled (the in-chart sink), or serving.transformer.logger.url to your sink's http(s):// URL or s3://bucket (KServe's blob-storage logger)" -}}
{{- end -}}
{{- if and $knative $t.enabled (lt ($s.knative.timeoutSeconds | int) ($t.requestTimeoutS | int)) -}}
{{- $problems = append $problems (printf "knative.timeout_seconds %d is shorter than transformer.request_timeout_s %d: Knative would cut requests the service still waits for" ($s.knative.timeoutSeconds | int) ($t.requestTimeoutS | int)) -}}
{{- end -}}
{{- if $knative -}}
{{- $deadline := include "rner.durationSeconds" $s.knative.progressDeadline | int -}}
{{- $sp := $p.startupProbe -}}
{{- $budget := add ($sp.initialDelaySeconds | int) (mul ($sp.periodSeconds | int) ($sp.failureThreshold | int)) -}}
{{- if le $deadline $budget -}}
{{- $problems = append $problems (printf "knative.progress_deadline %s must exceed the predictor's startup probe budget (%ds), or Knative fails the revision before the probe gives up" $s.knative.progressDeadline $budget) -}}
{{- end -}}
{{- end -}}
{{- $_ := include "rner.durationSeconds" $s.scaling.scaleDownDelay -}}
{{- if and (hasPrefix "s3://" $s.storage.storageUri) (index $s.storage "s3Endpoint") (not (index $s.storage "s3SecretName")) (not (index $s.storage "irsaRoleArn")) -}}
{{- $problems = append $problems "storage.s3_endpoint is set but neither storage.s3_secret_name nor storage.irsa_role_arn: KServe reads the endpoint from the S3 Secret's annotations (from the ServiceAccount's only with an IRSA role), so the storage initializer would go to AWS without keys" -}}
{{- end -}}
{{- range $where, $r := dict "predictor" $p.resources "transformer" $t.resources -}}
{{- range $kind := list "cpu" "memory" -}}
{{- $req := index $r (printf "%sRequest" $kind) -}}
{{- $lim := index $r (printf "%sLimit" $kind) -}}
{{- if gt (include "rner.quantity" $req | float64) (include "rner.quantity" $lim | float64) -}}
{{- $problems = append $problems (printf "%s.resources: %s_request %v exceeds %s_limit %v" $where $kind $req $kind $lim) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* chart-level consistency */ -}}
{{- $images := dict "serving.predictor.image" $p.image "serving.transformer.image (images.serve)" (include "rner.transformerImage" .) "images.cpu" (include "rner.image" (list . "cpu")) "images.trainGpu" (include "rner.image" (list . "trainGpu")) -}}
{{- range $what, $ref := $images -}}
{{- if regexMatch ":latest(@|$)" $ref -}}
{{- $problems = append $problems (printf "%s %q is not pinned: use a version tag (images.tag defaults to the chart's appVersion) or a digest, not :latest" $what $ref) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.servingRuntime.enabled (not (index $p "runtime")) -}}
{{- $problems = append $problems "servingRuntime.enabled needs serving.predictor.runtime: the ServingRuntime is created under that name" -}}
{{- end -}}
{{- $pipeline := .Files.Get "files/pipeline.yaml" -}}
{{- range $key, $secret := pick .Values.secrets "git" "s3" "teacher" "hf" -}}
{{- if not (contains (printf "secretName: %s\n" $secret.name) $pipeline) -}}
{{- $problems = append $problems (printf "secrets.%s.name %q is not a Secret the compiled pipeline (files/pipeline.yaml) reads; the pipeline's names are fixed at compile time (pipelines.reasoning_ner_pipeline.SECRETS)" $key $secret.name) -}}
{{- end -}}
{{- end -}}
{{- if and (index $s.storage "s3SecretName") (ne (index $s.storage "s3SecretName") .Values.secrets.s3.name) -}}
{{- $problems = append $problems (printf "serving.storage.s3SecretName %q differs from secrets.s3.name %q: serving and the pipeline read the same S3 Secret (or set s3SecretName to null for IRSA)" (index $s.storage "s3SecretName") .Values.secrets.s3.name) -}}
{{- end -}}
{{- $kfpNs := .Values.kfp.namespace | default "" -}}
{{- if not $kfpNs -}}
{{- $problems = append $problems "kfp.namespace is empty: set it to the namespace where pipeline runs execute (standalone Kubeflow Pipelines: kubeflow; multi-user Kubeflow: your profile namespace); the runner ServiceAccount, its Roles and the Secrets go there" -}}
{{- else if and .Values.kfp.multiUser (eq $kfpNs "kubeflow") -}}
{{- $problems = append $problems "kfp.multiUser is true but kfp.namespace is 'kubeflow': multi-user Kubeflow runs pipelines in a profile namespace (e.g. kubeflow-user-example-com); set kfp.namespace to it" -}}
{{- end -}}
{{- if and .Values.multiNode.namespace (ne .Values.multiNode.namespace $kfpNs) -}}
{{- $problems = append $problems (printf "multiNode.namespace %q differs from kfp.namespace %q: the pipeline creates its TrainJobs in the run's own namespace, where the shared ReadWriteMany PVC is mounted; leave multiNode.namespace empty" .Values.multiNode.namespace $kfpNs) -}}
{{- end -}}
{{- if and .Values.multiNode.grpoRuntime.enabled (not .Values.multiNode.enabled) -}}
{{- $problems = append $problems "multiNode.grpoRuntime.enabled needs multiNode.enabled: the GRPO TrainingRuntime serves multi-node TrainJobs, which need the TrainJob RBAC and the shared PVC" -}}
{{- end -}}
{{- $s3 := .Values.secrets.s3 -}}
{{- if and $s3.create (or (not $s3.accessKeyId) (not $s3.secretAccessKey)) -}}
{{- $problems = append $problems "secrets.s3.create needs secrets.s3.accessKeyId and secrets.s3.secretAccessKey (pass them with --set or a values file kept out of git), or set create to false and create the Secret yourself" -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "\n\ninvalid values for the reasoning-ner chart:\n  - %s\n" (join "\n  - " $problems)) -}}
{{- end -}}
{{- end -}}
