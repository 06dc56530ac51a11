# passnat: the two commands of the quick start are `make demo` and `make test`.
# Each installs what it needs (Debian packages when root, a venv with the Python packages).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv deps test test-unit test-integration bench bench-lab demo lint clean

all: test

$(STAMP): pyproject.toml setup.py passnat/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

deps:
	@bash scripts/install-deps.sh

# the whole suite with the compiled data plane, then again with the pure-Python one (PASSNAT_PURE=1,
# what runs where passnat/_speedups.c cannot be built): both must pass (issue 9)
test: deps venv
	$(PY) -m pytest -q
	PASSNAT_PURE=1 $(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest -q -m "not integration and not lab"

# the VPN lab demo (docs/lab.md): every scenario through passnat and the kernel NAT, then the report
demo: deps venv
	$(PY) -m passnat lab demo

bench: venv
	$(PY) bench/engine_bench.py
	$(PY) bench/alloc_bench.py

# passnat vs the kernel's NAT in a namespace lab (root), method of perf-anchors.md B.2 (docs/daemon.md):
# packet rates (60 B, 1442 B, new flows), overload, TCP, latency; a subset: bench/lab_bench.py --modes ... --rounds 1
bench-lab: deps venv
	$(PY) bench/lab_bench.py

lint: venv
	$(PY) -m pip install -q mypy ruff
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check passnat tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
