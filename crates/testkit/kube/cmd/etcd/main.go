// etcd at the version Kubernetes' own go.mod pins (3.5.x for 1.33), built here from
// go.etcd.io/etcd/server/v3 because Debian ships 3.4, older than Kubernetes supports.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
