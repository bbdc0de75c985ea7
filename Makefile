# Two entry points for a fresh Debian bookworm machine (as root):
#   make quickstart   install what is missing, build, run the quickstart experiment under mpirun
#   make test         install what is missing, build, run the whole test suite
#   make paper        install what is missing, build, reproduce the whole paper into one report
#                     (quilt reproduce; SCALE=here|smoke|paper, OUT=DIR, PAPER_JOBS=N experiments
#                     at a time)
# Everything else is plain CMake: see README.md.

PRESET ?= release
BUILD  := build/$(PRESET)
JOBS   ?= $(shell nproc)
PY     := /usr/bin/python3

# Debian packages the build, the tests and the analysis scripts need. ocl-icd-opencl-dev: oneDNN's
# CMake config (libdnnl-dev) requires OpenCL, a Recommends that --no-install-recommends skips.
PACKAGES := build-essential cmake git pkg-config ccache clang-format \
  libtorch-dev libopenblas0-pthread libdnnl-dev ocl-icd-opencl-dev libjemalloc-dev \
  libopenmpi-dev openmpi-bin \
  libhdf5-dev libfmt-dev libyaml-cpp-dev libbenchmark-dev libgtest-dev uuid-dev \
  libxrt-dev libxrt1 \
  pybind11-dev python3-dev python3-pytest python3-numpy python3-h5py python3-matplotlib \
  python3-pandas python3-scipy \
  python3-torch python3-torchvision python3-mpi4py python3-sklearn dataset-fashion-mnist zlib1g-dev \
  slurmctld slurmd slurm-client munge chromium \
  iproute2 nftables

# Open MPI refuses root and more ranks than cores unless told; both are normal here.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
# One intra-op thread per rank is the normal MPI setting.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1

SCALE ?= here

.PHONY: quickstart test paper deps configure build build-quilt bench format clean

# Only what the quickstart runs (the quilt binary and its libraries), not the tests and benchmarks.
quickstart: build-quilt
	mpirun -n 2 $(BUILD)/bin/quilt run experiments/quickstart.yaml --overwrite

paper: build
	$(BUILD)/bin/quilt reproduce --scale $(SCALE) $(if $(OUT),--out $(OUT)) $(if $(PAPER_JOBS),--jobs $(PAPER_JOBS))

test: build
	cd $(BUILD) && ctest --output-on-failure -j2 --timeout 900

deps:
	@missing=$$(for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

configure: deps
	cmake --preset $(PRESET)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

build-quilt: configure
	cmake --build $(BUILD) -j$(JOBS) --target quilt

bench: build
	$(PY) bench/run_all.py --build $(BUILD)

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	rm -rf build
