// Command health judges Kubernetes objects the way GitOps tools do.
//
// It reads JSON objects (one after the other, any layout) on stdin and writes one JSON line per
// object with:
//   - "kstatus":     sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute (kpt, older Flux)
//   - "fluxKstatus": github.com/fluxcd/cli-utils/pkg/kstatus/status.Compute (Flux's fork, used by
//     kustomize-controller and helm-controller for `wait: true`)
//   - "argocd":      the health Lua script given with -lua, run by Argo CD's own code
//     (util/lua.ResourceHealthOverrides.GetResourceHealth), exactly as a custom health check
//     configured in argocd-cm is run.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	argoappv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type answer struct {
	Kstatus     verdict `json:"kstatus"`
	FluxKstatus verdict `json:"fluxKstatus"`
	Argocd      verdict `json:"argocd"`
}

func main() {
	luaFile := flag.String("lua", "", "Argo CD health check script (resource.customizations.health.<group>_<kind>)")
	flag.Parse()
	script := ""
	if *luaFile != "" {
		data, err := os.ReadFile(*luaFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		script = string(data)
	}
	in := json.NewDecoder(bufio.NewReader(os.Stdin))
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := in.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "invalid JSON:", err)
			os.Exit(2)
		}
		// UnmarshalJSON keeps integers as int64, as the API machinery (and kstatus) expect.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			fmt.Fprintln(os.Stderr, "invalid object:", err)
			os.Exit(2)
		}
		if err := out.Encode(judge(obj, script)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}

func judge(obj *unstructured.Unstructured, script string) answer {
	var a answer
	if res, err := kstatus.Compute(obj.DeepCopy()); err != nil {
		a.Kstatus.Error = err.Error()
	} else {
		a.Kstatus = verdict{Status: res.Status.String(), Message: res.Message}
	}
	if res, err := fluxstatus.Compute(obj.DeepCopy()); err != nil {
		a.FluxKstatus.Error = err.Error()
	} else {
		a.FluxKstatus = verdict{Status: res.Status.String(), Message: res.Message}
	}
	if script != "" {
		gvk := obj.GroupVersionKind()
		overrides := argolua.ResourceHealthOverrides{
			argolua.GetConfigMapKey(gvk): argoappv1.ResourceOverride{HealthLua: script},
		}
		hs, err := overrides.GetResourceHealth(obj.DeepCopy())
		switch {
		case err != nil:
			a.Argocd.Error = err.Error()
		case hs == nil:
			a.Argocd.Error = "no health check applies"
		default:
			a.Argocd = verdict{Status: string(hs.Status), Message: hs.Message}
		}
	}
	return a
}
