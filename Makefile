# The two entry points README.md promises. Both install missing system packages first.
.PHONY: run test deps

# The main job: `homelab up` on ./homelab.toml (else the embedded default), then
# `homelab status`. Creates the SSH key it needs and starts libvirt when nothing runs it.
run: deps
	scripts/run.sh

# The whole test suite, exactly as CI runs it.
test: deps
	scripts/test.sh

deps:
	scripts/deps.sh
