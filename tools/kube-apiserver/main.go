// kube-apiserver of Kubernetes 1.35, built from the k8s.io/kubernetes module for the tests'
// API server (as controller-runtime's envtest runs one): `mlopsctl tools install` builds it into
// .tools/bin. k8s.io/kubernetes is not meant to be a dependency, so go.mod pins every k8s.io
// staging module it names as v0.0.0 to the matching v0.35.x with `replace` lines.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
