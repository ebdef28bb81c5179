{{/*
OTEL_RESOURCE_ATTRIBUTES of the operator container: the service and where it runs. The k8s.* values
come from the downward API through the POD_NAMESPACE, POD_NAME, POD_UID and NODE_NAME variables set
before it (Kubernetes expands $(VAR) references to earlier variables); otel.resourceAttributes adds
to them, URL-encoded as the variable's format requires.
*/}}
{{- define "kube-changejob.otelResourceAttributes" -}}
{{- $attrs := list
  (printf "service.name=%s" (.Values.otel.serviceName | urlquery))
  (printf "service.version=%s" (default .Chart.AppVersion .Values.image.tag | urlquery))
  "k8s.namespace.name=$(POD_NAMESPACE)"
  "k8s.pod.name=$(POD_NAME)"
  "k8s.pod.uid=$(POD_UID)"
  "k8s.node.name=$(NODE_NAME)"
  (printf "k8s.deployment.name=%s" (include "kube-changejob.deploymentName" .))
  "k8s.container.name=manager" }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key (toString $value | urlquery)) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
