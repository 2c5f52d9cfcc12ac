#!/usr/bin/env bash
# Makes an offline node bundle (see crates/kubeadm-boot/src/bundle.rs) from components built
# from their Go modules (scripts/kube-tools.sh) at the versions crates/testkit/kube pins:
#
#   bin/       kubeadm, kubelet, kubectl                  installed on every node over SSH
#   cni/       bridge, host-local, loopback, portmap      → /opt/cni/bin on every node
#   images/    kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd,
#              coredns, pause, flanneld, cni-flannel      the cluster's images are built from
#                                                         these on the host (homelab::bundle)
#   rootfs/    iptables (nft) and cp with the libraries they load, taken from this machine:
#              kube-proxy and Flannel run iptables, Flannel's installers run cp
#   manifests/kube-flannel.yml                            Flannel's manifest, from its module
#   VERSION, SHA256SUMS
#
#   scripts/node-bundle.sh DIR          write (or refresh) the bundle in DIR
#
# Every file is recorded in SHA256SUMS; homelab checks each against it before it uses the
# bundle and again on the node after the copy.
set -euo pipefail

out=${1:?usage: node-bundle.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$("$root/scripts/kube-tools.sh" all)
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$root/crates/testkit/kube/go.mod")
flannel=$(sed -n 's/^ *\[flanneld\]=github.com\/flannel-io\/flannel@\(v[0-9.]*\)$/\1/p' "$root/scripts/kube-tools.sh")

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/bin" "$out/cni" "$out/images" "$out/rootfs" "$out/manifests"
mkdir -p "$out/bin" "$out/cni" "$out/images" "$out/rootfs" "$out/manifests"

for c in kubeadm kubelet kubectl; do cp "$bin/$c" "$out/bin/$c"; done
for p in bridge host-local loopback portmap; do cp "$bin/cni-$p" "$out/cni/$p"; done
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns pause flanneld cni-flannel; do
  cp "$bin/$c" "$out/images/$c"
done

# A program from this machine with every library it loads, at the same paths.
with_libraries() {
  local program=$1 as=$2
  mkdir -p "$out/rootfs$(dirname "$as")"
  cp -L "$program" "$out/rootfs$as"
  ldd "$program" | awk '/=> \// { print $3 } /^[[:space:]]*\/lib/ { print $1 }' | while read -r lib; do
    mkdir -p "$out/rootfs$(dirname "$lib")"
    cp -L "$lib" "$out/rootfs$lib"
  done
}
multi=$(command -v xtables-nft-multi) || {
  echo "node-bundle: xtables-nft-multi is missing (apt-get install iptables)" >&2
  exit 1
}
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  with_libraries "$multi" "/usr/sbin/$name"
done
with_libraries "$(command -v cp)" /usr/bin/cp
# iptables loads its match and target extensions at run time, from the directory it was
# built with (the canonical one: the host's /lib may be a link to /usr/lib, the image's is not).
xt=$(realpath "$(dirname "$(ldd "$multi" | awk '/libxtables/ { print $3 }')")/xtables")
mkdir -p "$out/rootfs$xt"
cp -L "$xt"/*.so "$out/rootfs$xt/"
for so in "$xt"/*.so; do
  ldd "$so" | awk '/=> \// { print $3 }' | while read -r lib; do
    [[ -e $out/rootfs$lib ]] || { mkdir -p "$out/rootfs$(dirname "$lib")"; cp -L "$lib" "$out/rootfs$lib"; }
  done
done

# Every program of rootfs/ must start with nothing but rootfs/ around it (a missing library or
# loader shows only inside the cluster, as "exec /usr/bin/cp: no such file or directory").
if [[ $(id -u) == 0 ]]; then
  for p in /usr/sbin/iptables /usr/sbin/ip6tables /usr/bin/cp; do
    chroot "$out/rootfs" "$p" --version >/dev/null || {
      echo "node-bundle: $p does not run inside rootfs/ (a library is missing)" >&2
      exit 1
    }
  done
  # kube-proxy's rules use these extensions (loaded at run time, so --version cannot tell).
  for m in conntrack comment mark addrtype statistic; do
    chroot "$out/rootfs" /usr/sbin/iptables -m "$m" --help >/dev/null 2>&1 || {
      echo "node-bundle: iptables in rootfs/ cannot load its $m extension" >&2
      exit 1
    }
  done
else
  echo "node-bundle: not root, so rootfs/ was not test-run (chroot needs root)" >&2
fi

# Flannel's manifest at the pinned version, from the same module its flanneld was built from,
# made as Flannel's release makes the kube-flannel.yml it publishes (`make release-manifest`:
# the kustomization with the release's tag, through kubectl kustomize).
export PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=local
module_dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "github.com/flannel-io/flannel@$flannel" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
kustomization=$(mktemp -d)
cp -r "$module_dir/Documentation/kustomization/kube-flannel" "$kustomization/"
chmod -R u+w "$kustomization"
sed -i "s/^  newTag: .*/  newTag: $flannel/" "$kustomization/kube-flannel/kustomization.yaml"
"$bin/kubectl" kustomize "$kustomization/kube-flannel" > "$out/manifests/kube-flannel.yml" 2>/dev/null
rm -rf "$kustomization"

echo "$version" > "$out/VERSION"
(cd "$out" && find bin cni images rootfs manifests -type f | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
echo "node-bundle: $out (Kubernetes $version, Flannel $flannel, $(wc -l < "$out/SHA256SUMS") files, $(du -sh "$out" | cut -f1))" >&2
echo "$out"
