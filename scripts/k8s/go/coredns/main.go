// Command coredns is CoreDNS with the plugins a cluster's DNS uses (the Corefile of Kubernetes'
// cluster/addons/dns/coredns): the official coremain with a shorter plugin list, so the cloud
// SDKs that the full build links are never compiled. The order is CoreDNS's plugin.cfg order,
// which decides the order plugins run in.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "ready", "health", "prometheus", "errors", "log", "loadbalance", "cache",
		"kubernetes", "loop",
	}
}

func main() {
	coremain.Run()
}
