#!/usr/bin/env bash
# Runs the library crates' example programs, each on something real this machine has:
# libvirt's test driver, the embedded configuration, the wave table, a manifests repository
# written by homelab-gitops, and a snapshot of an etcd started here on loopback. Each run
# checks the program's exit status and one line of what it printed, so a program that
# stopped working fails the suite. (The examples that need a registry, an SSH server, an API
# server or Pulumi ESC are built by clippy and exercised through the same library calls by the
# crates' test suites.)
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
etcd_pid=
cleanup() {
  # etcd ends by the signal (status 143): not a failure of the examples.
  if [[ -n $etcd_pid ]]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

run() { cargo run --quiet --locked "$@"; }

# expect WANT_STATUS PATTERN -- COMMAND...: the command exits WANT_STATUS and prints PATTERN.
expect() {
  local want=$1 pattern=$2 status=0
  shift 3
  "$@" > "$work/out" 2>&1 || status=$?
  if [[ $status -ne $want ]] || ! grep -Eq "$pattern" "$work/out"; then
    echo "example failed: $* (exit $status, wanted $want and /$pattern/):" >&2
    tail -20 "$work/out" >&2
    exit 1
  fi
  echo "ok: ${*:5} -> exit $status, $(grep -Em1 "$pattern" "$work/out")"
}

echo "== libvirt-vm plan_three_vms (libvirt's test driver)"
expect 0 'create +domain' -- run -p libvirt-vm --example plan_three_vms
echo "== homelab-config check (the embedded default)"
expect 0 '.' -- run -p homelab-config --example check
echo "== homelab-cli-common tool (the flags every binary shares, an error with its cause)"
expect 0 'kubeadm_boot=debug' -- run -p homelab-cli-common --example tool -- -v
expect 1 'cannot read the configuration .*nope: No such file' -- run -p homelab-cli-common --example tool -- --config "$work/nope"
echo "== platform waves"
expect 0 'metallb' -- run -p platform --example waves

echo "== gitops validate (a repository written by homelab-gitops init)"
url=https://git.example.org/lab/gitops.git
printf '[gitops]\nrepo_url = "%s"\n' "$url" > "$work/homelab.toml"
run -p homelab-gitops -- --config "$work/homelab.toml" init "$work/repo" > /dev/null
expect 0 ' 0 errors' -- run -p gitops --example validate -- "$work/repo" "$url"
# A kustomization that names a file that is not there is an error: exit 1.
echo "  - missing.yaml" >> "$work/repo/core/kustomization.yaml"
expect 1 'missing\.yaml' -- run -p gitops --example validate -- "$work/repo" "$url"

echo "== kubeadm-boot verify_snapshot (a snapshot of etcd on loopback)"
ports=$(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
read -r client peer <<< "$ports"
etcd --name example --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "example=http://127.0.0.1:$peer" > "$work/etcd.log" 2>&1 &
etcd_pid=$!
etcdctl() { ETCDCTL_API=3 command etcdctl --endpoints "http://127.0.0.1:$client" "$@"; }
for _ in $(seq 100); do
  etcdctl endpoint health > /dev/null 2>&1 && break
  kill -0 "$etcd_pid" 2>/dev/null || { tail "$work/etcd.log" >&2; exit 1; }
  sleep 0.1
done
for i in $(seq 50); do etcdctl put "/example/$i" "value $i" > /dev/null; done
snapshot="$work/lab_cp1_r51_20261202T090500Z.db"
etcdctl snapshot save "$snapshot" > /dev/null 2>&1
expect 0 '^ok .*revision 51' -- run -p kubeadm-boot --example verify_snapshot -- "$snapshot"
# One byte changed in the middle: the appended sha256 no longer matches.
cp "$snapshot" "$work/changed.db"
size=$(stat -c %s "$work/changed.db")
printf '\x5a' | dd of="$work/changed.db" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect 1 'changed\.db' -- run -p kubeadm-boot --example verify_snapshot -- "$work/changed.db"
