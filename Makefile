# Carrier - build, test and demo entry points.
#
# `make demo` and `make test` work on a fresh Debian/Ubuntu machine: each first
# installs whatever system packages are missing (through sudo when not root),
# then builds with SwiftPM.

SWIFT      ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
SWIFTC     ?= $(shell command -v swiftc 2>/dev/null || echo /opt/swift/usr/bin/swiftc)
# Libraries the build links, and the real peers the tests start.
BUILD_PKGS := libuv1-dev libssl-dev libc-ares-dev pkg-config
TEST_PKGS  := dnsmasq-base openssl ca-certificates postfix chromium python3 swaks curl


.PHONY: all build release demo test sanitize fuzz fuzz-build bench bench-spool deps-build deps-test clean

all: build

# deps-% - install the packages of a group that dpkg does not list as installed.
deps-build:
	@./.ci/install-packages $(BUILD_PKGS)

deps-test: deps-build
	@./.ci/install-packages $(TEST_PKGS)
	@python3 -c "import aiosmtpd" 2>/dev/null || python3 -m pip install --quiet aiosmtpd

build: deps-build
	$(SWIFT) build

release: deps-build
	$(SWIFT) build -c release --product carrier

# The main job on an embedded default: a 100,000-recipient personalised campaign
# delivered to three local test providers (see README, "Quick start").
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

# libFuzzer targets, one per parser that reads the network (Fuzz/). SwiftPM
# cannot link a fuzzer main, so Bytes and SMTP are compiled here with swiftc
# into static libraries instrumented for libFuzzer and AddressSanitizer, and
# each harness is linked against them, all under .build-fuzz/. Each target
# then runs FUZZ_SECONDS seconds from its committed seeds (Fuzz/Corpus/<target>/,
# read only); new inputs go to .build-fuzz/corpus/<target>/, crashes to
# .build-fuzz/artifacts/. A crash stops `make fuzz` with a non-zero status;
# reproduce it with `.build-fuzz/<target> <crash file>`.
FUZZ_SECONDS ?= 20
FUZZ_DIR     := .build-fuzz
FUZZ_TARGETS := ReplyParserFuzz CommandParserFuzz AddressFuzz DataReaderFuzz
FUZZ_SWIFTC  := $(SWIFTC) -swift-version 6 -enable-upcoming-feature ExistentialAny \
                -enable-upcoming-feature InternalImportsByDefault -package-name Carrier \
                -parse-as-library -sanitize=fuzzer,address -O -g -use-ld=lld -I .
# Per-target libFuzzer options: command lines reach 12,288 octets (AUTH).
FUZZ_OPTIONS_CommandParserFuzz := -max_len=16384

fuzz-build: $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))

$(FUZZ_DIR)/libBytes.a: $(wildcard Sources/Bytes/*.swift)
	@mkdir -p $(FUZZ_DIR)
	cd $(FUZZ_DIR) && $(FUZZ_SWIFTC) -module-name Bytes -emit-module -emit-library -static \
	    -o libBytes.a $(addprefix $(CURDIR)/,$^)

$(FUZZ_DIR)/libSMTP.a: $(wildcard Sources/SMTP/*.swift) $(FUZZ_DIR)/libBytes.a
	cd $(FUZZ_DIR) && $(FUZZ_SWIFTC) -module-name SMTP -emit-module -emit-library -static \
	    -o libSMTP.a $(addprefix $(CURDIR)/,$(wildcard Sources/SMTP/*.swift))

$(FUZZ_DIR)/%Fuzz: Fuzz/%Fuzz.swift Fuzz/FuzzSupport.swift $(FUZZ_DIR)/libSMTP.a
	cd $(FUZZ_DIR) && $(FUZZ_SWIFTC) -module-name $*Fuzz -o $*Fuzz \
	    $(CURDIR)/Fuzz/FuzzSupport.swift $(CURDIR)/Fuzz/$*Fuzz.swift -L . -lSMTP -lBytes

# FUZZ_RUN - run one target from its seeds; a crash fails the recipe line, so `make fuzz`.
define FUZZ_RUN
	@mkdir -p $(FUZZ_DIR)/corpus/$(1)
	@echo "== $(1): $(FUZZ_SECONDS) s"
	$(FUZZ_DIR)/$(1) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_OPTIONS_$(1)) \
	    $(FUZZ_DIR)/corpus/$(1) Fuzz/Corpus/$(1)

endef

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	$(foreach target,$(FUZZ_TARGETS),$(call FUZZ_RUN,$(target)))

# Micro-benchmarks (ordo-one/package-benchmark); results go in Benchmarks/README.md.
bench: deps-build
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

# The spool's bars, side by side with SQLite in the same run (Benchmarks/README.md).
# Writes about 2 GB under SPOOLBENCH_DIR and removes it afterwards.
SPOOLBENCH_DIR ?= /tmp/carrier-spoolbench
bench-spool: deps-build
	@./.ci/install-packages libsqlite3-dev
	cd Benchmarks && $(SWIFT) build -c release --product SpoolBench --scratch-path .build-spoolbench
	Benchmarks/.build-spoolbench/release/SpoolBench --dir $(SPOOLBENCH_DIR); status=$$?; rm -rf $(SPOOLBENCH_DIR); exit $$status

clean:
	rm -rf .build .build-asan .build-fuzz Benchmarks/.build Benchmarks/.build-spoolbench
