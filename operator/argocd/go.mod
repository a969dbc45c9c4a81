// Tests the Argo CD health checks under resource_customizations/ the way
// Argo CD runs them (gopher-lua, Lua 5.1). Not part of the Rust build.
module berth.dev/operator/argocd

go 1.24

require (
	github.com/yuin/gopher-lua v1.1.2
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.2 // indirect
