//go:build tools

// Package tools keeps the control-plane commands in the module graph so that
// `go build k8s.io/kubernetes/cmd/...` resolves at the pinned versions.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
