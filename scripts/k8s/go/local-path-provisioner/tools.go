//go:build tools

// The program scripts/k8s/build.sh builds, listed so that `go mod tidy` keeps its module.
package tools

import _ "github.com/rancher/local-path-provisioner"
