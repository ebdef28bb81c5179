// Command pause is the pod sandbox process of the real node's images (tools/image.sh): it holds the
// pod's namespaces open, reaps the zombies it inherits as PID 1, and exits on SIGINT or SIGTERM.
// It does what Kubernetes' build/pause/linux/pause.c does, in Go, so the image needs no C toolchain
// and no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
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
