# `make test` and `make run` create .venv from requirements.txt when it is missing or older than the file.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements
PORT ?= 8501

.PHONY: test run lint clean

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	cp requirements.txt $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile

run: $(STAMP)
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) --browser.gatherUsageStats false

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) test-output .pytest_cache .ruff_cache
