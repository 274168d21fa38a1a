# `make test` and `make run` create .venv from requirements.txt when it is missing or older than it or
# pyproject.toml, and install this checkout into it in editable mode (the `chestxray` command, and `pipeline`
# importable from any folder, the dashboard's included).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-requirements
PORT ?= 8501

.PHONY: test run lint clean demo-model

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	cp requirements.txt $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile

run: $(STAMP)
	$(VENV)/bin/python -m streamlit run app/main.py --server.port $(PORT) --browser.gatherUsageStats false

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Rebuild the shipped demo runs (about an hour on a 2-core CPU): the class-weighted loss and plain BCE,
# same everything else; each exported by train (ONNX + typicality statistics) and evaluated on nih/test.csv with
# thresholds chosen on nih/valid-small.csv.
DEMO_SETTINGS := --train nih/train-small.csv --valid nih/valid-small.csv --images nih/images --weights none \
	--image-size 128 --epochs 30 --batch-size 16 --lr 1e-3 --patience 8 --seed 0
demo-model: $(STAMP)
	for loss in weighted plain; do \
	  run=artifacts/runs/densenet121-128-$$loss; \
	  $(VENV)/bin/python -m pipeline train $(DEMO_SETTINGS) --loss $$loss --out $$run && \
	  $(VENV)/bin/python -m pipeline evaluate --checkpoint $$run/best.keras --labels nih/valid-small.csv \
	    --images nih/images --out $$run/eval-valid && \
	  $(VENV)/bin/python -m pipeline evaluate --checkpoint $$run/best.keras --labels nih/test.csv \
	    --images nih/images --valid-predictions $$run/eval-valid --out $$run/eval-test || exit 1; \
	done
	$(VENV)/bin/python -m pipeline compare artifacts/runs/densenet121-128-weighted/eval-test \
	  artifacts/runs/densenet121-128-plain/eval-test

clean:
	rm -rf $(VENV) test-output .pytest_cache .ruff_cache
