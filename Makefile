# Shortcuts for the scripts in scripts/ (which work without make, too).
.PHONY: demo test down lint clean bench drill

demo:            ## bring up the lab and place demo 112 calls
	scripts/demo
test:            ## all tests, integration against the real lab
	scripts/test
down:            ## stop the lab
	scripts/down
lint:            ## ruff and mypy
	scripts/bootstrap
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
clean:           ## stop the lab, delete it (cached root filesystem too) and the venv
	-.venv/bin/verbund112 lab purge
	rm -rf .venv
bench:           ## routing benchmarks (decision, FastAGI, calls/s plain vs routed)
	scripts/bench
drill:           ## fault drills under load (full size), prints the table; lost must be 0
	scripts/drill
