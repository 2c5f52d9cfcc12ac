#!/usr/bin/env bash
# Builds Kubernetes components from their published Go modules, at the versions that
# crates/testkit/kube/go.mod pins, into a cache outside the repository. Built once per
# machine and version; later runs reuse the binaries. No package of any reachable registry
# ships them, but the Go toolchain and the Go module proxy are there.
#
#   scripts/kube-tools.sh kube-apiserver kubectl     build (or reuse) these; print the bin dir
#                                                    (also: kube-controller-manager, kube-scheduler,
#                                                    kube-proxy, kubelet, kubeadm, etcd 3.5 for the
#                                                    API server, and the node bundle's add-ons:
#                                                    pause, coredns, flanneld, and the CNI plugins
#                                                    cni-bridge, cni-host-local, cni-loopback,
#                                                    cni-portmap, cni-flannel; versitygw, an S3
#                                                    server for the backup tests; tekton-check, which
#                                                    holds Tekton objects to Tekton's own Go types
#                                                    (crates/testkit/tekton); `all` names every one)
#   scripts/kube-tools.sh --install kubectl          also link each into /usr/local/bin
#   scripts/kube-tools.sh --dir                      print the bin dir only
#   scripts/kube-tools.sh --stale kube-apiserver     print those not built from this go.sum
#
# HOMELAB_KUBE_CACHE moves the cache (default /var/cache/homelab/kube).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=$root/crates/testkit/kube
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$module/go.mod")
[[ -n $version ]] || { echo "kube-tools: no k8s.io/kubernetes version in $module/go.mod" >&2; exit 1; }
bin=${HOMELAB_KUBE_CACHE:-/var/cache/homelab/kube}/$version/bin

# Add-ons that are not part of k8s.io/kubernetes, each built from its own module at the
# version the pinned release expects (kubeadm 1.33 deploys CoreDNS v1.12.0; Flannel is
# versions.flannel of the embedded default). Their go.sum lines are checked against the Go
# checksum database by `go install module@version`. Flannel's CNI plugin
# (github.com/flannel-io/cni-plugin) is not served by the module proxy here; the same plugin
# before it moved to its own repository, containernetworking/plugins v0.9.1's meta/flannel,
# stands in for it.
declare -A addon=(
  [coredns]=github.com/coredns/coredns@v1.12.0
  [flanneld]=github.com/flannel-io/flannel@v0.27.4
  [cni-bridge]=github.com/containernetworking/plugins/plugins/main/bridge@v1.6.2
  [cni-host-local]=github.com/containernetworking/plugins/plugins/ipam/host-local@v1.6.2
  [cni-loopback]=github.com/containernetworking/plugins/plugins/main/loopback@v1.6.2
  [cni-portmap]=github.com/containernetworking/plugins/plugins/meta/portmap@v1.6.2
  [cni-flannel]=github.com/containernetworking/plugins/plugins/meta/flannel@v0.9.1
  # Not Kubernetes: a real S3-compatible server (Versity's gateway, POSIX backend) for the
  # tests of the etcd backup's copy to a bucket. No Debian package ships an S3 server.
  [versitygw]=github.com/versity/versitygw/cmd/versitygw@v1.8.0
)
all=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl etcd pause
  coredns flanneld cni-bridge cni-host-local cni-loopback cni-portmap cni-flannel versitygw tekton-check)

install=false
stale_only=false
components=()
for arg in "$@"; do
  case $arg in
    --install) install=true ;;
    --stale) stale_only=true ;;
    --dir) echo "$bin"; exit 0 ;;
    all) components+=("${all[@]}") ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | kubectl | kubelet | kubeadm | etcd | pause | \
      coredns | flanneld | cni-bridge | cni-host-local | cni-loopback | cni-portmap | cni-flannel | versitygw | \
      tekton-check)
      components+=("$arg") ;;
    *) echo "kube-tools: unknown component or option: $arg" >&2; exit 2 ;;
  esac
done

# A binary is reused when it was built from the same lock (go.sum, or the add-on's version)
# by the same recipe (static: every binary also runs in an image with nothing else in it;
# Kubernetes' own Go release for its components).
recipe=static-2 addon_recipe=static-1
lock=$(sha256sum "$module/go.sum" | cut -c1-16)
# tekton-check is homelab's own program (crates/testkit/tekton), built against Tekton's
# modules at the versions its go.mod pins: its stamp is its sources'.
tekton_module=$root/crates/testkit/tekton
stamp_of() {
  if [[ $1 == tekton-check ]]; then
    echo "static-1 $(cat "$tekton_module/go.mod" "$tekton_module/go.sum" "$tekton_module/main.go" | sha256sum | cut -c1-16)"
  elif [[ -n ${addon[$1]:-} ]]; then echo "$addon_recipe ${addon[$1]}"; else echo "$recipe $lock"; fi
}
fresh() { [[ -x $bin/$1 && $(cat "$bin/.$1.stamp" 2>/dev/null) == "$(stamp_of "$1")" ]]; }
if $stale_only; then
  for c in "${components[@]}"; do
    fresh "$c" || echo "$c"
  done
  exit 0
fi

# The Go toolchain: on the PATH, or where the machine image puts it. Never downloaded.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || {
  echo "kube-tools: Go is not installed; building ${components[*]} needs Go $(awk '$1 == "go" { print $2 }' "$module/go.mod") or newer" >&2
  exit 1
}
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
# The Kubernetes components are built with the Go release Kubernetes itself was built with
# (the module's .go-version; the go command takes that toolchain from the module proxy once,
# ~10 s). A newer Go changes behaviour they rely on: built with Go 1.26, kubeadm's preflight
# fails, because net/url no longer accepts the bracketed IPv4 address it builds.
k8s_go=go$(cat "$(go env GOMODCACHE)/k8s.io/kubernetes@$version/.go-version" 2>/dev/null ||
  (cd "$module" && go mod download k8s.io/kubernetes && cat "$(go env GOMODCACHE)/k8s.io/kubernetes@$version/.go-version"))

minor=${version#v1.}
minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean"
mkdir -p "$bin"
for c in "${components[@]}"; do
  fresh "$c" && continue
  echo "kube-tools: building $c from its Go module (minutes on a cold cache)" >&2
  started=$SECONDS
  if [[ $c == tekton-check ]]; then
    (cd "$tekton_module" && go build -trimpath -ldflags "-s -w" -o "$bin/.$c.tmp" .)
  elif [[ -n ${addon[$c]:-} ]]; then
    # Outside our module, in the add-on's own (its go.mod decides its dependencies).
    gobin=$(mktemp -d)
    cgo=0 flags="-s -w"
    if [[ $c == flanneld ]]; then
      # As Flannel's own Makefile builds it on amd64: its UDP backend is C, linked statically.
      cgo=1 flags="-s -w -X github.com/flannel-io/flannel/pkg/version.Version=${addon[$c]#*@} -extldflags -static"
    fi
    (cd / && CGO_ENABLED=$cgo GOFLAGS=-mod=mod GOBIN=$gobin go install -trimpath -ldflags "$flags" "${addon[$c]}")
    mv "$gobin"/* "$bin/.$c.tmp"
    rm -rf "$gobin"
  else
    # etcd's server from go.etcd.io at the version k8s.io/kubernetes requires (cmd/etcd here),
    # the pause container's process (cmd/pause here); the rest from k8s.io/kubernetes' own
    # cmd/ packages.
    package=k8s.io/kubernetes/cmd/$c
    [[ $c == etcd || $c == pause ]] && package=./cmd/$c
    (cd "$module" && GOTOOLCHAIN=$k8s_go go build -trimpath -ldflags "$ldflags" -o "$bin/.$c.tmp" "$package")
  fi
  mv "$bin/.$c.tmp" "$bin/$c"
  stamp_of "$c" > "$bin/.$c.stamp"
  echo "kube-tools: built $c in $((SECONDS - started)) s" >&2
done

if $install; then
  for c in "${components[@]}"; do
    link=/usr/local/bin/$c
    if [[ -e $link && ! -L $link ]]; then
      echo "kube-tools: $link exists and is not ours; left alone (the build is in $bin)" >&2
      continue
    fi
    ln -sf "$bin/$c" "$link"
    echo "kube-tools: linked $link -> $bin/$c" >&2
  done
fi
echo "$bin"
