#!/usr/bin/env bash
# Builds Kubernetes components from their published Go modules, at the versions that
# crates/testkit/kube/go.mod pins, into a cache outside the repository. Built once per
# machine and version; later runs reuse the binaries. No package of any reachable registry
# ships them, but the Go toolchain and the Go module proxy are there.
#
#   scripts/kube-tools.sh kube-apiserver kubectl     build (or reuse) these; print the bin dir
#                                                    (also: kube-controller-manager, kube-scheduler,
#                                                    kubelet, kubeadm, and etcd 3.5 for the API server)
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

install=false
stale_only=false
components=()
for arg in "$@"; do
  case $arg in
    --install) install=true ;;
    --stale) stale_only=true ;;
    --dir) echo "$bin"; exit 0 ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kubeadm | etcd)
      components+=("$arg") ;;
    *) echo "kube-tools: unknown component or option: $arg" >&2; exit 2 ;;
  esac
done

# A binary is reused when it was built from the same go.sum (the lock).
stamp=$(sha256sum "$module/go.sum" | cut -c1-16)
if $stale_only; then
  for c in "${components[@]}"; do
    [[ -x $bin/$c && $(cat "$bin/.$c.stamp" 2>/dev/null) == "$stamp" ]] || echo "$c"
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
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

minor=${version#v1.}
minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean"
mkdir -p "$bin"
for c in "${components[@]}"; do
  if [[ -x $bin/$c && $(cat "$bin/.$c.stamp" 2>/dev/null) == "$stamp" ]]; then
    continue
  fi
  echo "kube-tools: building $c $version from its Go module (minutes on a cold cache)" >&2
  started=$SECONDS
  # etcd's server from go.etcd.io at the version k8s.io/kubernetes requires (cmd/etcd here);
  # the rest from k8s.io/kubernetes' own cmd/ packages.
  package=k8s.io/kubernetes/cmd/$c
  [[ $c == etcd ]] && package=./cmd/etcd
  (cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$bin/.$c.tmp" "$package")
  mv "$bin/.$c.tmp" "$bin/$c"
  echo "$stamp" > "$bin/.$c.stamp"
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
