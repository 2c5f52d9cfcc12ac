#!/usr/bin/env bash
# Every library crate built alone, as a project that depends on one layer would build it:
# with its default features and with none. The pure parts of the VM and cluster layers are
# then tested without their native and network dependencies, and their dependency trees are
# checked for what they must not pull in.
set -euo pipefail
cd "$(dirname "$0")/.."

# k8s-openapi needs one Kubernetes version chosen; libraries leave that to the final program
# (k8s-openapi's rule), so a library built alone names it the way its docs say: this variable.
# The workspace's programs choose the same version with the v1_33 feature.
export K8S_OPENAPI_ENABLED_VERSION=1.33

libraries=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c '
import json, sys
# The library crates under crates/, except the test kit every suite shares (not a layer).
for p in json.load(sys.stdin)["packages"]:
    if "/crates/" in p["manifest_path"] and p["name"] != "homelab-testkit":
        print(p["name"])')

for crate in $libraries; do
  for features in --no-default-features ""; do
    echo "== cargo build -p $crate ${features:-(default features)}"
    # shellcheck disable=SC2086 # an empty $features is no argument
    cargo build --quiet --locked -p "$crate" $features
  done
done

# The pure parts, tested with none of the default features.
for crate in libvirt-vm kubeadm-boot; do
  echo "== cargo test -p $crate --no-default-features"
  cargo test --quiet --locked -p "$crate" --no-default-features
done

# What the pure parts must not link: libvirt's C library (virt), SSH (russh), the async
# runtime, and every network client.
forbidden='^(virt|virt-sys|russh|tokio|hyper|reqwest|kube|kube-client)$'
for crate in libvirt-vm kubeadm-boot; do
  found=$(cargo tree --locked -p "$crate" --no-default-features -e normal --prefix none \
    --format '{p}' | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
  if [[ -n $found ]]; then
    echo "$crate --no-default-features still depends on: $found" >&2
    exit 1
  fi
  echo "$crate --no-default-features depends on none of virt, russh, tokio, hyper, reqwest, kube"
done
