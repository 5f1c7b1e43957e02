//go:build tools

// The program scripts/k8s/build.sh builds, listed so that `go mod tidy` keeps its module.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
