# Two entry points: `make demo` (install + `volmargin run`, the main job, on the built-in synthetic market) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench browser clean

$(STAMP): pyproject.toml serving/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: pip finds the local CPU wheel; a looser spec pulls multi-GB CUDA builds
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/volmargin run

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -q

# The report's test opens it in headless Chromium; install Debian's package when we may (root + apt),
# else that one test skips and says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "note: Chromium not installed; the report's browser test will be skipped"

bench: $(STAMP)
	$(BIN)/python bench/backtest_speed.py

clean:
	rm -rf runs .pytest_cache
