//go:build tools

// The Kubernetes components the test suite runs for real, built from their published Go
// modules at the versions go.mod pins (see scripts/kube-tools.sh). Nothing of theirs is kept
// in this repository: go.mod and go.sum name the versions, like a lock file.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
