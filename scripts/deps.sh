#!/usr/bin/env bash
# Installs the system packages the build and the tests need, only when one is missing.
# Safe to run again: it changes nothing when everything is present.
#
#   scripts/deps.sh            packages for building and for the whole test suite
#   scripts/deps.sh --check    only report what is missing (exit 1 if anything is)
set -euo pipefail

# Debian package, then the command or file that proves it is installed.
PACKAGES=(
  "pkg-config:pkg-config"
  "make:make"
  "libvirt-dev:/usr/include/libvirt/libvirt.h"     # the virt crate links libvirt
  "libvirt-daemon-system:/usr/sbin/libvirtd"       # real VMs (qemu:///system)
  "libvirt-clients:/usr/bin/virsh"
  "qemu-system-x86:/usr/bin/qemu-system-x86_64"
  "qemu-utils:/usr/bin/qemu-img"
  "dnsmasq-base:/usr/sbin/dnsmasq"                 # libvirt NAT networks
  "debootstrap:/usr/sbin/debootstrap"              # the base image builder
  "e2fsprogs:/sbin/mkfs.ext4"
  "openssh-server:/usr/sbin/sshd"                  # SSH tests against a real server
  "openssh-client:/usr/bin/ssh"
  "sudo:/usr/bin/sudo"                             # the SSH layer's non-interactive sudo, tested on loopback
  "openssl:/usr/bin/openssl"                       # cross-checks the CA discovery hash
  "procps:/usr/bin/pkill"
  "docker-registry:/usr/bin/docker-registry"       # a real OCI registry for harbor-client's tests
  "skopeo:/usr/bin/skopeo"                         # an independent OCI client to cross-check
  "containerd:/usr/bin/containerd"                 # a real containerd (and ctr): a node pulling from the registry
  "etcd-server:/usr/bin/etcd"                      # the real control plane's store in tests
  "etcd-client:/usr/bin/etcdctl"                   # etcd snapshots: taken and restored in the backup tests
  "rclone:/usr/bin/rclone"                         # the scheduled etcd backup's copy to S3, run by its test
  "postgresql:/usr/bin/pg_ctlcluster"              # a real PostgreSQL: the web template's dump and restore, run by their test
  "gnupg:/usr/bin/gpg"                             # OpenPGP keys: fingerprint cross-checks, a signed test repository
  "apt-utils:/usr/bin/apt-ftparchive"              # the stand-in Kubernetes package repository of the real-VM suite
  "iptables:/usr/sbin/xtables-nft-multi"           # the node bundle's kube-proxy and Flannel images carry it
  "gcc:/usr/bin/gcc"                               # Flannel's UDP backend is C (cgo), as Flannel builds it
  "libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a"     # ... linked statically
)

missing=()
for entry in "${PACKAGES[@]}"; do
  pkg=${entry%%:*}
  probe=${entry#*:}
  probe=${probe%% *}
  if [[ $probe == /* ]]; then
    [[ -e $probe ]] || missing+=("$pkg")
  else
    command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is not installed; install Rust first: https://rustup.rs" >&2
  exit 1
fi

# Tools that no Debian package ships at a usable version, built from their registries.
#   cargo-nextest: the test runner scripts/test.sh uses (crates.io).
#   kubectl: the GitOps validator and its tests build kustomizations with `kubectl kustomize`;
#            Debian 12's kubernetes-client is 1.20 (kustomize v2), so kubectl is built from
#            its Go module at the pinned Kubernetes version (scripts/kube-tools.sh).
#   etcd (3.5; Debian has 3.4), kube-apiserver, kube-controller-manager, kube-scheduler: the
#            real control plane the kube tests run against; with kube-proxy, kubelet, kubeadm,
#            CoreDNS, Flannel, the CNI plugins and a pause process, the offline node bundle
#            the real-VM suite brings a cluster up from (scripts/node-bundle.sh). Built from
#            their Go modules like kubectl (cached per machine and version; kube-tools.sh
#            rebuilds only what its lock no longer matches). Also Versity's S3 gateway, the
#            real S3 server the backup copy's test writes to.
tools_missing=()
cargo nextest --version >/dev/null 2>&1 || tools_missing+=("cargo-nextest")
kubectl kustomize --help >/dev/null 2>&1 || tools_missing+=("kubectl")
[[ -z $("$(dirname "$0")/kube-tools.sh" --stale all) ]] || tools_missing+=("kubernetes")

install_tools() {
  for tool in "${tools_missing[@]}"; do
    case $tool in
      cargo-nextest)
        echo "deps: installing cargo-nextest from crates.io (a few minutes, once)"
        cargo install --locked --quiet cargo-nextest
        ;;
      kubectl)
        echo "deps: building kubectl from its Go module (a few minutes, once)"
        "$(dirname "$0")/kube-tools.sh" --install kubectl >/dev/null
        ;;
      kubernetes)
        echo "deps: the Kubernetes components, CoreDNS, Flannel and the CNI plugins (built from their Go modules when not cached: minutes, once)"
        "$(dirname "$0")/kube-tools.sh" all >/dev/null
        ;;
    esac
  done
}

if [[ ${#missing[@]} -eq 0 ]]; then
  if [[ ${1:-} == --check ]]; then
    [[ ${#tools_missing[@]} -eq 0 ]] || { echo "deps: missing: ${tools_missing[*]}" >&2; exit 1; }
    echo "deps: everything present"
    exit 0
  fi
  echo "deps: all system packages present"
  install_tools
  exit 0
fi

if [[ ${1:-} == --check ]]; then
  echo "deps: missing: ${missing[*]} ${tools_missing[*]}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing ${missing[*]} and apt-get is not available; install them with your package manager" >&2
  exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)

echo "deps: installing ${missing[*]}"
"${apt[@]}" update -qq
extra=()
# qemu-system-x86 and qemu-utils must come from the same QEMU release; a machine whose
# qemu-utils came from backports would otherwise refuse the install.
if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
  want=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  for pkg in qemu-utils qemu-block-extra; do
    have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
    if [[ -n $have && -n $want && $have != "$want" ]]; then
      echo "deps: aligning $pkg $have with qemu-system-x86 $want"
      extra+=("$pkg=$want")
    fi
  done
fi
"${apt[@]}" install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" "${extra[@]}"
install_tools
