// The process of a pod's sandbox container: it holds the pod's namespaces while the pod
// lives, reaps the orphans the pod's other processes leave (it is PID 1 in a shared PID
// namespace) and exits cleanly when stopped. Written here for the node bundle's pause image
// (registry.k8s.io/pause is not downloadable on these machines); kubelet only needs a
// process that stays up.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (homelab node bundle)")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
