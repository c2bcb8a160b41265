# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# Only what the demo needs: rotator and its redis extra (not the test and bench tools).
DEMO_STAMP := $(VENV)/.demo-installed

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[redis]'
	touch $@

# The daemon on the file keystore + local JWKS file in ./demo with a fast demo policy for
# about 15 s: keys created, activated and retired, a token signed before a rotation
# verified after it, and (with a redis-server installed) a revocation taking effect.
demo: $(DEMO_STAMP)
	sh scripts/demo.sh

test: $(STAMP)
	sh scripts/test-deps.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Speed, stampede and service-load comparisons against peers (prints ratios; a few minutes).
bench: $(STAMP)
	sh scripts/test-deps.sh
	$(BIN)/python bench/verify_bench.py
	$(BIN)/python bench/revocation_bench.py
	$(BIN)/python bench/revocation_callgrind.py
	$(BIN)/python bench/verify_callgrind.py
	$(BIN)/python bench/sign_bench.py
	$(BIN)/python bench/stampede_bench.py
	$(BIN)/python bench/service_bench.py
	sh scripts/bench-deps.sh
	$(BIN)/python bench/authz_bench.py

# The chaos soak, long form: 10 minutes against SeaweedFS; writes soak-report.json.
# Then the SIGHUP-burst test 20 times (the suite runs it 3 times), thirty simulated days
# of an ES256 and an RS256 key set sharing one JWKS (the suite runs two), and the revocation
# fleet test with 200,000 records (the suite runs 20,000).
soak: $(STAMP)
	$(BIN)/python bench/soak.py --duration 600 --report soak-report.json
	ROTATOR_SIGHUP_RUNS=20 $(BIN)/python -m pytest -q tests/test_daemon.py -k sighup_bursts
	ROTATOR_SIMULATION_DAYS=30 ROTATOR_SHARED_SIMULATION_DAYS=30 $(BIN)/python -m pytest -q -s tests/test_simulation.py
	ROTATOR_FLEET_RECORDS=200000 $(BIN)/python -m pytest -q -s tests/test_revocation_fleet.py

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
