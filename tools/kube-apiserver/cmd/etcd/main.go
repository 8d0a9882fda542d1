// etcd for the tests' API server, at the version k8s.io/kubernetes v1.35.4 itself requires
// (go.etcd.io/etcd/server/v3 v3.6.5): its own main, etcdmain, with nothing added.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
