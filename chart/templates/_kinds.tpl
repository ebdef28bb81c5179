{{/*
The kinds whose REST resource and scope admission knows without asking the API server: the
built-in kinds of Kubernetes 1.30 and later that a ChangeTriggeredJob may sensibly watch, plus
admissionPolicy.kinds. The ValidatingAdmissionPolicy reads the resource name and scope of these
from here (for any other kind it derives the resource name as Kubernetes does, from the kind), and
the webhook is called only for spec changes that name a kind outside this table, so ChangeTriggeredJobs
on these kinds are admitted, and fully checked, while no replica is running.
tests/integration/test_admission_policy.py proves every entry against the API server's discovery.
*/}}
{{- define "kube-changejob.builtinKinds" -}}
- {apiVersion: v1, kind: ConfigMap, resource: configmaps, namespaced: true}
- {apiVersion: v1, kind: Secret, resource: secrets, namespaced: true}
- {apiVersion: v1, kind: Service, resource: services, namespaced: true}
- {apiVersion: v1, kind: ServiceAccount, resource: serviceaccounts, namespaced: true}
- {apiVersion: v1, kind: Endpoints, resource: endpoints, namespaced: true}
- {apiVersion: v1, kind: PersistentVolumeClaim, resource: persistentvolumeclaims, namespaced: true}
- {apiVersion: v1, kind: Pod, resource: pods, namespaced: true}
- {apiVersion: v1, kind: PodTemplate, resource: podtemplates, namespaced: true}
- {apiVersion: v1, kind: ReplicationController, resource: replicationcontrollers, namespaced: true}
- {apiVersion: v1, kind: LimitRange, resource: limitranges, namespaced: true}
- {apiVersion: v1, kind: ResourceQuota, resource: resourcequotas, namespaced: true}
- {apiVersion: v1, kind: Node, resource: nodes, namespaced: false}
- {apiVersion: v1, kind: Namespace, resource: namespaces, namespaced: false}
- {apiVersion: v1, kind: PersistentVolume, resource: persistentvolumes, namespaced: false}
- {apiVersion: apps/v1, kind: Deployment, resource: deployments, namespaced: true}
- {apiVersion: apps/v1, kind: StatefulSet, resource: statefulsets, namespaced: true}
- {apiVersion: apps/v1, kind: DaemonSet, resource: daemonsets, namespaced: true}
- {apiVersion: apps/v1, kind: ReplicaSet, resource: replicasets, namespaced: true}
- {apiVersion: apps/v1, kind: ControllerRevision, resource: controllerrevisions, namespaced: true}
- {apiVersion: batch/v1, kind: Job, resource: jobs, namespaced: true}
- {apiVersion: batch/v1, kind: CronJob, resource: cronjobs, namespaced: true}
- {apiVersion: autoscaling/v1, kind: HorizontalPodAutoscaler, resource: horizontalpodautoscalers, namespaced: true}
- {apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, resource: horizontalpodautoscalers, namespaced: true}
- {apiVersion: policy/v1, kind: PodDisruptionBudget, resource: poddisruptionbudgets, namespaced: true}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, resource: ingresses, namespaced: true}
- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, resource: networkpolicies, namespaced: true}
- {apiVersion: networking.k8s.io/v1, kind: IngressClass, resource: ingressclasses, namespaced: false}
- {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, resource: endpointslices, namespaced: true}
- {apiVersion: coordination.k8s.io/v1, kind: Lease, resource: leases, namespaced: true}
- {apiVersion: rbac.authorization.k8s.io/v1, kind: Role, resource: roles, namespaced: true}
- {apiVersion: rbac.authorization.k8s.io/v1, kind: RoleBinding, resource: rolebindings, namespaced: true}
- {apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, resource: clusterroles, namespaced: false}
- {apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, resource: clusterrolebindings, namespaced: false}
- {apiVersion: storage.k8s.io/v1, kind: StorageClass, resource: storageclasses, namespaced: false}
- {apiVersion: storage.k8s.io/v1, kind: CSIDriver, resource: csidrivers, namespaced: false}
- {apiVersion: storage.k8s.io/v1, kind: VolumeAttachment, resource: volumeattachments, namespaced: false}
- {apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, resource: priorityclasses, namespaced: false}
- {apiVersion: node.k8s.io/v1, kind: RuntimeClass, resource: runtimeclasses, namespaced: false}
- {apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, resource: customresourcedefinitions, namespaced: false}
- {apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingWebhookConfiguration, resource: validatingwebhookconfigurations, namespaced: false}
- {apiVersion: admissionregistration.k8s.io/v1, kind: MutatingWebhookConfiguration, resource: mutatingwebhookconfigurations, namespaced: false}
- {apiVersion: certificates.k8s.io/v1, kind: CertificateSigningRequest, resource: certificatesigningrequests, namespaced: false}
{{- end }}

{{/* Every known kind: the built-in ones, then admissionPolicy.kinds (a later entry wins in CEL maps). */}}
{{- define "kube-changejob.knownKinds" -}}
{{- $kinds := include "kube-changejob.builtinKinds" . | fromYamlArray }}
{{- range .Values.admissionPolicy.kinds }}
{{- $kinds = append $kinds . }}
{{- end }}
{{- toYaml $kinds }}
{{- end }}

{{/*
A CEL map literal from "apiVersion/Kind" to [resource, "Namespaced" or "Cluster"] for every known
kind, sorted so the render is stable.
*/}}
{{- define "kube-changejob.knownKindsCel" -}}
{{- $entries := dict }}
{{- range (include "kube-changejob.knownKinds" . | fromYamlArray) }}
{{- $_ := set $entries (printf "%s/%s" .apiVersion .kind) (printf "['%s', '%s']" .resource (ternary "Namespaced" "Cluster" .namespaced)) }}
{{- end }}
{{- $pairs := list }}
{{- range $key := keys $entries | sortAlpha }}
{{- $pairs = append $pairs (printf "'%s': %s" $key (get $entries $key)) }}
{{- end }}
{{- printf "{\n%s\n}" (join ",\n" $pairs) }}
{{- end }}

{{/* A CEL map literal from "apiVersion/kind" with the kind lower-cased to the kind's real spelling. */}}
{{- define "kube-changejob.knownKindsLowerCel" -}}
{{- $entries := dict }}
{{- range (include "kube-changejob.knownKinds" . | fromYamlArray) }}
{{- $_ := set $entries (printf "%s/%s" .apiVersion (lower .kind)) .kind }}
{{- end }}
{{- $pairs := list }}
{{- range $key := keys $entries | sortAlpha }}
{{- $pairs = append $pairs (printf "'%s': '%s'" $key (get $entries $key)) }}
{{- end }}
{{- printf "{\n%s\n}" (join ",\n" $pairs) }}
{{- end }}
