# The two entry points README.md promises. Both install missing system packages first.
.PHONY: run test test-cluster test-vms api-check deps

# The main job: `homelab up` on ./homelab.toml (else the embedded default), then
# `homelab status`. Creates the SSH key it needs and starts libvirt when nothing runs it.
run: deps
	scripts/run.sh

# The whole test suite, exactly as CI runs it.
test: deps
	scripts/test.sh

# The real-VM suite alone, with its cluster step (every node Ready; about 28 minutes under
# software emulation on two cores), as `make test` runs it.
test-cluster: deps
	cargo nextest run -p homelab-vm --locked --run-ignored all -E 'test(=real_vms_cluster_ready)'

# The real-VM suite without the cluster step: a quicker loop (about 14 minutes here) for
# changes below the cluster layer.
test-vms: deps
	cargo nextest run -p homelab-vm --locked --run-ignored all -E 'test(=real_vms_apply_reapply_interrupt_destroy)'

# Each library crate's public API against the last release (.api-baseline): fails when a
# change needs a bigger version bump than it got (cargo-semver-checks, built on first use).
api-check:
	scripts/api-check.sh

deps:
	scripts/deps.sh
