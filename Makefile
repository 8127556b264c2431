# Carrier - build, test and demo entry points.
#
# `make demo` and `make test` work on a fresh Debian/Ubuntu machine: each first
# installs whatever system packages are missing (through sudo when not root),
# then builds with SwiftPM.

SWIFT      ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# Libraries the build links, and the real peers the tests start.
BUILD_PKGS := libuv1-dev libssl-dev libc-ares-dev pkg-config
TEST_PKGS  := dnsmasq-base openssl ca-certificates


.PHONY: all build release demo test sanitize bench deps-build deps-test clean

all: build

# deps-% - install the packages of a group that dpkg does not list as installed.
deps-build:
	@./.ci/install-packages $(BUILD_PKGS)

deps-test: deps-build
	@./.ci/install-packages $(TEST_PKGS)

build: deps-build
	$(SWIFT) build

release: deps-build
	$(SWIFT) build -c release --product carrier

# The main job on an embedded default. Until the delivery engine exists this
# runs the event-core echo benchmark (plain TCP and TLS over loopback).
demo: release
	.build/release/carrier demo

test: deps-test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# The whole suite under AddressSanitizer, in its own build folder.
sanitize: deps-test
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp \
	    $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan

# Micro-benchmarks (ordo-one/package-benchmark); results go in Benchmarks/README.md.
bench: deps-build
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

clean:
	rm -rf .build .build-asan Benchmarks/.build
