// tekton-check holds Tekton objects to Tekton's own Go types, at the versions homelab
// installs: each YAML document on standard input (documents separated by "---" lines) of a
// kind it knows is decoded strictly (an unknown field is an error, as the API server's
// strict field validation would make it) into Pipelines' tekton.dev/v1 or Triggers'
// triggers.tekton.dev/v1beta1 types, given its defaults and validated by the same
// Validate methods Tekton's admission webhooks run. The objects a TriggerTemplate makes are
// checked too, with every $(tt.params.NAME) given a stand-in value first, and an object
// with only a generateName is given a name, as the API server gives it one before
// admission.
//
// It prints one line per object ("ok KIND NAME" or "KIND NAME: what is wrong") and exits 1
// when any object is wrong, 2 when the input cannot be read.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	triggersv1beta1 "github.com/tektoncd/triggers/pkg/apis/triggers/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

type object interface {
	SetDefaults(context.Context)
	Validate(context.Context) *apis.FieldError
}

func newObject(apiVersion, kind string) object {
	switch apiVersion + "/" + kind {
	case "tekton.dev/v1/Task":
		return &pipelinev1.Task{}
	case "tekton.dev/v1/Pipeline":
		return &pipelinev1.Pipeline{}
	case "tekton.dev/v1/PipelineRun":
		return &pipelinev1.PipelineRun{}
	case "triggers.tekton.dev/v1beta1/EventListener":
		return &triggersv1beta1.EventListener{}
	case "triggers.tekton.dev/v1beta1/TriggerBinding":
		return &triggersv1beta1.TriggerBinding{}
	case "triggers.tekton.dev/v1beta1/TriggerTemplate":
		return &triggersv1beta1.TriggerTemplate{}
	}
	return nil
}

var ttParam = regexp.MustCompile(`\$\(tt\.params\.[A-Za-z0-9_.-]+\)`)

// check decodes and validates one document; it returns how many objects were wrong.
func check(doc []byte, where string) int {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name         string `json:"name"`
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		fmt.Printf("%s: not YAML: %v\n", where, err)
		return 1
	}
	o := newObject(head.APIVersion, head.Kind)
	if o == nil {
		return 0
	}
	name := head.Metadata.Name + head.Metadata.GenerateName
	label := fmt.Sprintf("%s%s %s", where, head.Kind, name)
	if err := yaml.UnmarshalStrict(doc, o); err != nil {
		fmt.Printf("%s: %v\n", label, err)
		return 1
	}
	// The API server names an object with a generateName before admission sees it.
	if m, ok := o.(metav1.Object); ok && m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + "x7k2p")
	}
	ctx := context.Background()
	o.SetDefaults(ctx)
	if err := o.Validate(ctx); err != nil {
		fmt.Printf("%s: %s\n", label, strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	fmt.Printf("ok %s\n", label)
	bad := 0
	if tt, ok := o.(*triggersv1beta1.TriggerTemplate); ok {
		for i, rt := range tt.Spec.ResourceTemplates {
			made := ttParam.ReplaceAll(rt.Raw, []byte("stand-in"))
			bad += check(made, fmt.Sprintf("%s resourcetemplates[%d]: ", label, i))
		}
	}
	return bad
}

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tekton-check: reading standard input:", err)
		os.Exit(2)
	}
	bad := 0
	var doc []string
	flush := func() {
		if text := strings.TrimSpace(strings.Join(doc, "\n")); text != "" {
			bad += check([]byte(text), "")
		}
		doc = doc[:0]
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimRight(line, " ") == "---" {
			flush()
			continue
		}
		doc = append(doc, line)
	}
	flush()
	if bad > 0 {
		os.Exit(1)
	}
}
