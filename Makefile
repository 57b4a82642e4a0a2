# Every target sets up the virtual environment first, so a fresh clone needs only
# `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test unit integration metrics-test chaos-short chaos lint bench soak clean browser

# Installs with uv where it can (from the same package registry: ~1 min on 2 cores), else with
# pip (~1.5 min); both resolve the same versions. --compile-bytecode, as pip does: without .pyc
# files (and with PYTHONDONTWRITEBYTECODE=1, as on this machine) every Ray worker would compile
# Ray again, which made the integration tests 60% slower.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	{ $(PY) -m pip install --quiet uv && $(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'; } \
	  || { $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]'; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m runtime.demo

lint: $(STAMP)
	$(PY) -m ruff check orchestrations entities runtime tests benchmarks
	$(PY) -m mypy orchestrations entities runtime

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not chaos"

# `make integration INTEGRATION_ARGS="-n 2 --dist loadfile"` runs whole modules on two workers
# (faster on an idle machine); CI runs them one after another, which is what the suite is proven in.
INTEGRATION_ARGS ?=
integration: $(STAMP)
	$(PY) -m pytest -q -m integration $(INTEGRATION_ARGS)
	DURABLE_ALWAYS_REPLAY=1 $(PY) -m pytest -q -m integration $(INTEGRATION_ARGS)

# Ray serves its Prometheus endpoint only with ray[default] (the `metrics` extra), whose agent
# would slow every other test's ray.init: the test that reads the endpoint runs in a venv of its own,
# layered on .venv (a .pth adds .venv's site-packages), into which uv (~10 s) or else pip (~25 s)
# installs what ray[default] adds, at .venv's Ray version.
METRICS_VENV := .venv-metrics
RAY_VERSION = $$($(PY) -c 'import ray; print(ray.__version__)')
$(METRICS_VENV)/.installed: $(STAMP)
	rm -rf $(METRICS_VENV)
	$(PYTHON) -m venv $(METRICS_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  > "$$($(METRICS_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_dev_venv.pth"
	$(PY) -m uv pip install --quiet --compile-bytecode --python $(METRICS_VENV)/bin/python "ray[default]==$(RAY_VERSION)" \
	  || $(METRICS_VENV)/bin/python -m pip install --quiet "ray[default]==$(RAY_VERSION)"
	touch $@

metrics-test: $(METRICS_VENV)/.installed
	$(METRICS_VENV)/bin/python -m pytest -q -m integration tests/integration/test_metrics.py

# A short chaos run (random SIGKILLs of shard hosts and workers under a mixed workload).
chaos-short: $(STAMP)
	$(PY) -m pytest -q -s -m chaos

# The long chaos run: 5 runs in a row, each >= 20 kills over 500 orchestrations and 1,000 transfers.
chaos: $(STAMP)
	CHAOS_RUNS=5 CHAOS_ORCHESTRATIONS=500 CHAOS_TRANSFERS=1000 CHAOS_KILLS=20 $(PY) -m pytest -q -s -m chaos

# The web UI's browser test (tests/integration/test_ui.py) drives Debian's chromium through its
# chromedriver. Where they are missing, running as root with apt-get, this installs them;
# otherwise it says so and that test skips, naming what it needs.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the web UI's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	  || echo "could not install chromium: the web UI's browser test will be skipped"; \
	else echo "no chromium here: the web UI's browser test will be skipped (apt-get install chromium chromium-driver)"; fi

# The whole suite (shuffled by pytest-randomly; the seed is printed first): lint and the pure
# tests side by side (each uses one core; their outputs are kept apart), integration tests, then
# the integration tests again with always_replay=True (every turn replays from history instead
# of a cached generator), the metrics endpoint's test (in .venv-metrics), then a short chaos run.
test: browser $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target lint unit
	$(MAKE) --no-print-directory integration metrics-test chaos-short

# Every benchmark next to its plain-Ray baseline (10-20 minutes on 2 cores); writes
# benchmarks/results/latest.{json,md} and chart.png. `make bench BENCH_ARGS=--quick` for a
# scaled-down smoke run (writes quick.{json,md} and chart-quick.png). Not part of `test`.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# The soak run (not in `make test`): an eternal orchestration and a stream of transfers for 10
# minutes; prints whether file size, `delivered` rows and shard host memory stay flat.
soak: $(STAMP)
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(METRICS_VENV) .durable
