# keel — the two commands a user needs are `make run` and `make test`.
JOBS   ?= $(shell nproc)
PREFIX ?= /usr/local
BENCH  ?= all

CMAKE_QUIET = -DCMAKE_RULE_MESSAGES=OFF -Wno-dev --log-level=WARNING

.PHONY: all deps build build-asan run test bench install clean

all: build

deps:
	@tools/deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_QUIET)
	@cmake --build build -j$(JOBS) -- --no-print-directory -s

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON $(CMAKE_QUIET)
	@cmake --build build-asan -j$(JOBS) -- --no-print-directory -s

run: build
	@echo "keel: starting keel-kv, the Redis-compatible store, on every CPU (Ctrl-C stops it)"
	@./build/keel-kv

test: build build-asan
	@tools/run-tests.sh

bench: build
	@tests/bench/run.sh $(BENCH)

install: build
	@cmake --install build --prefix $(PREFIX)

clean:
	rm -rf build build-asan
