// Command etcd is the etcd server from the module graph of the pinned
// Kubernetes release, so the stack needs no separate etcd download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
