#!/usr/bin/env bash
# The main job: bring up the home lab of ./homelab.toml (else the embedded default) with
# `homelab up`, then show `homelab status`. `make run` runs this after installing what it needs.
#
# It creates the SSH key the configuration names when there is none (and says where), starts
# libvirt's daemons when nothing answers on qemu:///system (machines without systemd), and
# exits with `homelab up`'s status; the status table is shown either way.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --locked -p homelab-cli --bin homelab || exit 1
homelab=target/debug/homelab

# The key homelab logs in to the nodes with.
key=$("$homelab" config show -o json | sed -n 's/.*"private_key": *"\([^"]*\)".*/\1/p' | head -n 1)
key=${key/#\~/$HOME}
if [[ -n $key && ! -f $key ]]; then
  mkdir -p "$(dirname "$key")"
  ssh-keygen -q -t ed25519 -N '' -C "homelab" -f "$key"
  echo "run: created the SSH key pair $key (and $key.pub): homelab logs in to the nodes with it"
fi

# libvirt's daemons, where no init system started them.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "run: starting virtlogd and libvirtd (nothing answered on qemu:///system)"
  virtlogd -d && libvirtd -d
  for _ in $(seq 1 60); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 1
  done
fi

"$homelab" up --yes
status=$?
echo
"$homelab" status
exit "$status"
