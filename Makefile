# The two entry points README.md promises. Both install missing system packages first.
.PHONY: run test deps

# The main job: build `homelab` and check the configuration it would use
# (./homelab.toml if present, else the embedded default), then print it.
run: deps
	cargo run --quiet --locked -p homelab-cli --bin homelab -- config validate
	cargo run --quiet --locked -p homelab-cli --bin homelab -- config show

# The whole test suite, exactly as CI runs it.
test: deps
	scripts/test.sh

deps:
	scripts/deps.sh
