# LFD-Edge: `make demo` runs the whole pipeline on synthetic data; `make test` runs the tests.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CONFIG  ?= configs/demo.yaml
RUNS    ?= runs
DEMO    := $(RUNS)/demo
TEACHER ?= $(DEMO)/teacher/best.pt
STUDENT_STEPS ?= 200
STUDENT ?= $(DEMO)/distill/demo-lfd-s0/best.pt
EXPORT  := $(DEMO)/export
SIZE    ?=
BUDGET  ?= 30ms
SIZE_ARG = $(if $(SIZE),--size $(SIZE))
FOOTAGE_TEACHER ?= $(RUNS)/footage/teacher/final.pt
FOOTAGE ?= synthetic:500
FOOTAGE_SEEDS ?= 1
FOOTAGE_TEACHER_STEPS ?= 400
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: help setup test lint pytest check teacher distill distill-footage compare export export-trt eval bench infer demo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[train,export,dev,teachers]'
	# tensorrt-stubs depends on tensorrt (not installable from PyPI alone): install it on its own.
	$(PIP) install -q --no-deps 'tensorrt-stubs==10.13.0.35.1'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install .[train,export,dev]

lint: setup  ## ruff, and mypy of the TensorRT code against tensorrt-stubs
	$(VENV)/bin/ruff check runtime train export calib tests scripts
	PATH=$(VENV)/bin:$$PATH bash scripts/lint_trt.sh

pytest: setup
	$(PY) -m pytest tests

test: lint pytest  ## lint + the whole test suite (CPU, a few minutes)

check: setup  ## environment report (runtime + training); FULL=1 adds the self-test, speed test and export check (~5 min)
	$(PY) -m runtime.check
	rc=0  # with FULL=1 the export check runs even when a training row failed; the target fails if either did
	$(PY) -m train.check $(if $(FULL),--speed) || rc=$$?
	$(if $(FULL),$(PY) -m export.check || rc=$$?)
	exit $$rc

teacher: setup  ## train (or reuse) the synthetic demo teacher
	if [ -f $(TEACHER) ]; then echo "reusing teacher $(TEACHER)"; else \
	  $(PY) -m train.teacher --config configs/demo-teacher.yaml name=demo/teacher; fi

distill: teacher  ## student alone, KD and LFD from the teacher cache at equal counted FLOPs (STUDENT_STEPS baseline steps); mIoU table
	$(PY) -m train.compare --config $(CONFIG) --teacher $(TEACHER) --methods baseline,kd,lfd \
	  --budget $(STUDENT_STEPS) --match flops --charge amortised --seeds 1 --out $(DEMO)/distill

distill-footage: setup  ## label-scarce scenario: 50 labels + unlabeled footage (FOOTAGE=synthetic:500); student alone vs KD and LFD at equal FLOPs
	if [ -f $(FOOTAGE_TEACHER) ]; then echo "reusing teacher $(FOOTAGE_TEACHER)"; else \
	  $(PY) -m train.teacher --config configs/footage-teacher.yaml name=footage/teacher train.runs_dir=$(RUNS) \
	    train.budget=$(FOOTAGE_TEACHER_STEPS); fi
	$(PY) -m train.compare --config configs/footage.yaml --teacher $(FOOTAGE_TEACHER) --methods baseline,kd,lfd \
	  --budget $(STUDENT_STEPS) --match flops --charge amortised --seeds $(FOOTAGE_SEEDS) \
	  --out $(RUNS)/footage/distill data.unlabeled=$(FOOTAGE)

compare: teacher  ## 7 methods x 2 seeds at an equal 2-minute budget from one teacher cache (synthetic data, ~32 min on 2 cores)
	$(PY) -m train.compare --config configs/compare.yaml --teacher $(TEACHER) \
	  --methods baseline,kd,cwd,fitnet,at,lfd,fkd --budget 2m --seeds 2 --charge amortised --out $(RUNS)/compare

export: setup  ## ONNX, FP16 ONNX, both INT8 ONNX models and the OpenVINO FP32/INT8 IRs of the demo student, with reports
	$(PY) -m export.onnx --checkpoint $(STUDENT) $(SIZE_ARG) --out $(EXPORT)/student.onnx
	$(PY) -m calib.quantize --onnx $(EXPORT)/student.onnx --data synthetic --target cpu --images 32 --max-drop 0.5 --best-effort --val-images 30
	$(PY) -m calib.quantize --onnx $(EXPORT)/student.onnx --data synthetic --target trt --images 32 --val-images 30
	$(PY) -m calib.quantize --onnx $(EXPORT)/student.onnx --data synthetic --fp16
	$(PY) -m export.openvino --onnx $(EXPORT)/student.onnx
	$(PY) -m calib.quantize --onnx $(EXPORT)/student.onnx --data synthetic --target openvino --images 32 --max-drop 0.5 --best-effort --val-images 30

export-trt: export  ## TensorRT FP16 and INT8 engines (where TensorRT and a GPU exist)
	$(PY) -m export.trt --onnx $(EXPORT)/student.fp16.onnx --precision fp16
	$(PY) -m export.trt --onnx $(EXPORT)/student.int8.trt.onnx --precision int8

eval: setup  ## mIoU of every exported model on synthetic validation data
	$(PY) -m runtime.eval --model $(STUDENT) $(EXPORT)/student.onnx $(EXPORT)/student.fp16.onnx \
	  $(EXPORT)/student.int8.cpu.onnx $(EXPORT)/student.int8.trt.onnx $(EXPORT)/student.openvino.xml \
	  $(EXPORT)/student.int8.openvino.xml --data synthetic --split val --out $(DEMO)/eval

bench: setup  ## latency table of every exported model, OpenVINO IRs included (JSON, Markdown, PNG)
	$(PY) -m runtime.bench --models $(STUDENT) $(EXPORT)/student.onnx $(EXPORT)/student.fp16.onnx \
	  $(EXPORT)/student.int8.cpu.onnx $(EXPORT)/student.openvino.xml $(EXPORT)/student.int8.openvino.xml \
	  $(SIZE_ARG) --warmup 5 --iters 50 --data synthetic --out $(DEMO)/bench

select: setup  ## the most accurate way to run the exported student on this machine within BUDGET (default 30ms)
	$(PY) -m runtime.select --models $(EXPORT)/student.onnx $(EXPORT)/student.int8.cpu.onnx \
	  $(EXPORT)/student.openvino.xml $(EXPORT)/student.int8.openvino.xml --data synthetic --max-images 30 \
	  --latency-budget $(BUDGET) --out $(DEMO)/select || test $$? -eq 1

infer: setup  ## an overlay video of synthetic frames made by runtime.infer
	$(PY) -m runtime.datasets.synthetic --video $(DEMO)/synthetic.mp4 --frames 60 --size 512x1024
	$(PY) -m runtime.infer --model $(EXPORT)/student.int8.cpu.onnx --source $(DEMO)/synthetic.mp4 \
	  --save $(DEMO)/overlay.mp4 --json $(DEMO)/infer.json

demo: setup distill export eval bench select infer  ## the whole pipeline on synthetic data (CPU, < 20 min)
	@echo "demo artefacts under $(DEMO)/"

clean:  ## remove runs and caches (keeps .venv)
	rm -rf $(RUNS) data/cache .pytest_cache .mypy_cache .ruff_cache stubs
