# Outpost build, test and release entry points. `make help` lists targets.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Go from the official tarball lives in /usr/local/go; CI shells may not
# have it on PATH.
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

GO      ?= go
BINDIR  ?= bin
PKG     := github.com/outpost-pki/outpost
# CI may run as root on a checkout another user owns; git then refuses to
# read it unless told the directory is safe.
GIT     := git -c safe.directory=$(CURDIR)
VERSION ?= $(shell $(GIT) describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell $(GIT) rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
# -trimpath and -buildvcs=false make builds reproducible: no local paths,
# and the commit comes only from COMMIT above.
GOBUILD := $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'

# Which binaries need cgo, and why:
# - outpost-agent: CGO_ENABLED=1. PKCS#11 HSMs are reached through
#   crypto11/miekg/pkcs11, which dlopen()s the vendor's C module. Cross
#   builds therefore need a C cross compiler per target (installed by
#   `make deps`). The TPM backend (go-tpm) is pure Go.
# - outpost-controlplane: CGO_ENABLED=1, for the same PKCS#11 reason (CA
#   keys in an HSM).
# - outpostctl: CGO_ENABLED=0. Pure Go, a static binary that runs anywhere.
# Tests also need cgo: the race detector, SoftHSM2 through crypto11, and
# the in-process TPM simulator (which links OpenSSL's libcrypto).
CC_ARM64 ?= aarch64-linux-gnu-gcc
CC_ARMV7 ?= arm-linux-gnueabihf-gcc

# Debian packages the build and the tests need. PostgreSQL 15 is expected
# at /usr/lib/postgresql/15/bin and installed only when missing.
DEB_PACKAGES := ca-certificates git make gcc libc6-dev libssl-dev \
	gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
	softhsm2 opensc swtpm swtpm-tools tpm2-tools \
	mosquitto mosquitto-clients protobuf-compiler chromium busybox curl openssl systemd rpm
PG_BINDIR := /usr/lib/postgresql/15/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# testbed/peers is a module of its own: peer software measured beside
# Outpost, kept out of Outpost's go.mod.
PEERS_DIR := testbed/peers
# packaging is one too: nfpm, which builds the .deb and .rpm packages,
# stays out of Outpost's go.mod.
PACKAGING_DIR := packaging

TEST_TIMEOUT ?= 18m
TEST_FLAGS   ?=
BENCH        ?= .
# Rows in the certificate table the pagination benchmarks page through.
OUTPOST_BENCH_CERTS ?= 1000000
export OUTPOST_BENCH_CERTS
BENCHTIME    ?= 2s

.PHONY: help
help: ## list the targets with a one-line description
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install build and test dependencies (Debian packages, pinned Go tools); idempotent, no prompts
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	[ -x $(PG_BINDIR)/initdb ] || missing="$$missing postgresql-15"; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(SUDO) apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "deps: all Debian packages present"; \
	fi
	@command -v $(GO) >/dev/null || { echo "deps: Go not found: install Go 1.26 into /usr/local/go (https://go.dev/dl/)"; exit 1; }
	$(GO) mod download
	cd $(PEERS_DIR) && $(GO) mod download
	cd $(PACKAGING_DIR) && $(GO) mod download
	@# Pinned Go tools come from go.mod's tool directives; building them
	@# here caches them, so later targets work offline.
	$(GO) build -o /dev/null tool

DEMO_DEVICES ?= 300

.PHONY: build
build: ## build all binaries into bin/ (agent also for linux/arm64 and linux/armv7)
	@mkdir -p $(BINDIR)
	CGO_ENABLED=1 $(GOBUILD) -o $(BINDIR)/outpost-agent ./agent/cmd/outpost-agent
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(CC_ARM64) $(GOBUILD) -o $(BINDIR)/outpost-agent-linux-arm64 ./agent/cmd/outpost-agent
	CGO_ENABLED=1 GOOS=linux GOARCH=arm GOARM=7 CC=$(CC_ARMV7) $(GOBUILD) -o $(BINDIR)/outpost-agent-linux-armv7 ./agent/cmd/outpost-agent
	CGO_ENABLED=1 $(GOBUILD) -o $(BINDIR)/outpost-controlplane ./controlplane/cmd/outpost-controlplane
	CGO_ENABLED=0 $(GOBUILD) -o $(BINDIR)/outpostctl ./controlplane/cmd/outpostctl
	for a in amd64:amd64 arm64:arm64 arm:armv7; do CGO_ENABLED=0 GOOS=linux GOARCH=$${a%%:*} GOARM=7 $(GOBUILD) -o $(BINDIR)/outpost-device-linux-$${a#*:} ./firmware-hooks/cmd/outpost-device; done
	$(GOBUILD) -o $(BINDIR)/outpost-testbed ./testbed/cmd/outpost-testbed

.PHONY: build-host
build-host: ## build the binaries for this machine only (what testbed/up needs)
	@mkdir -p $(BINDIR)
	CGO_ENABLED=1 $(GOBUILD) -o $(BINDIR)/outpost-agent ./agent/cmd/outpost-agent
	CGO_ENABLED=1 $(GOBUILD) -o $(BINDIR)/outpost-controlplane ./controlplane/cmd/outpost-controlplane
	CGO_ENABLED=0 $(GOBUILD) -o $(BINDIR)/outpostctl ./controlplane/cmd/outpostctl
	$(GOBUILD) -o $(BINDIR)/outpost-testbed ./testbed/cmd/outpost-testbed

.PHONY: loadgen
loadgen: ## build bin/loadgen, the load generator for a system testbed/up started (docs/LOADGEN.md)
	@mkdir -p $(BINDIR)
	CGO_ENABLED=0 $(GOBUILD) -o $(BINDIR)/loadgen ./testbed/loadgen

# Packages (docs/PACKAGING.md): .deb and .rpm of the agent (amd64, arm64,
# armv7 = armhf), the control plane (amd64, arm64) and outpostctl (all
# three), built by packaging/cmd/mkpkg with the nfpm library from
# packaging/*.yaml. Binaries go to $(BINDIR)/linux-<arch>/, packages to
# $(DISTDIR). Every mtime in a package is SOURCE_DATE_EPOCH (default: the
# commit time), so the same commit gives byte-identical packages.
ARCHES   ?= amd64 arm64 armv7
PACKAGES ?= outpost-agent outpost-controlplane outpostctl
DISTDIR  ?= dist
SOURCE_DATE_EPOCH ?= $(shell $(GIT) log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: package
package: package-bins ## build .deb and .rpm packages into dist/ (ARCHES="amd64 arm64 armv7", PACKAGES=...; reproducible)
	@$(MAKE) --no-print-directory package-files

.PHONY: package-bins
package-bins: ## build the packaged binaries per arch into bin/linux-<arch>/ (make package runs it)
	@for arch in $(ARCHES); do \
		case $$arch in \
		amd64) goenv="GOARCH=amd64"; bins="outpost-agent outpost-controlplane outpostctl" ;; \
		arm64) goenv="GOARCH=arm64 CC=$(CC_ARM64)"; bins="outpost-agent outpost-controlplane outpostctl" ;; \
		armv7) goenv="GOARCH=arm GOARM=7 CC=$(CC_ARMV7)"; bins="outpost-agent outpostctl" ;; \
		*) echo "package-bins: unknown arch $$arch (want amd64, arm64, armv7)"; exit 1 ;; \
		esac; \
		mkdir -p $(BINDIR)/linux-$$arch; \
		for bin in $$bins; do \
			case " $(PACKAGES) " in *" $$bin "*) ;; *) continue ;; esac; \
			case $$bin in outpost-agent) src=./agent/cmd/$$bin cgo=1 ;; outpost-controlplane) src=./controlplane/cmd/$$bin cgo=1 ;; *) src=./controlplane/cmd/$$bin cgo=0 ;; esac; \
			echo "CGO_ENABLED=$$cgo GOOS=linux $$goenv $(GOBUILD) -o $(BINDIR)/linux-$$arch/$$bin $$src"; \
			env CGO_ENABLED=$$cgo GOOS=linux $$goenv $(GOBUILD) -o $(BINDIR)/linux-$$arch/$$bin $$src; \
		done; \
	done

.PHONY: package-files
package-files: ## write the packages of ARCHES into dist/ from binaries package-bins built
	@mkdir -p $(BINDIR)
	cd $(PACKAGING_DIR) && $(GO) build -o $(abspath $(BINDIR))/mkpkg ./cmd/mkpkg
	@written=""; \
	for arch in $(ARCHES); do \
		case $$arch in \
		amd64) nfpmarch=amd64; pkgs="outpost-agent outpost-controlplane outpostctl" ;; \
		arm64) nfpmarch=arm64; pkgs="outpost-agent outpost-controlplane outpostctl" ;; \
		armv7) nfpmarch=arm7; pkgs="outpost-agent outpostctl" ;; \
		*) echo "package-files: unknown arch $$arch (want amd64, arm64, armv7)"; exit 1 ;; \
		esac; \
		for pkg in $$pkgs; do \
			case " $(PACKAGES) " in *" $$pkg "*) ;; *) continue ;; esac; \
			out="$$(SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(abspath $(BINDIR))/mkpkg \
				-config $(PACKAGING_DIR)/$$pkg.yaml -arch $$nfpmarch -version $(VERSION) \
				-bindir $(abspath $(BINDIR))/linux-$$arch -out $(abspath $(DISTDIR)))"; \
			written="$$written $$out"; \
		done; \
	done; \
	[ -n "$$written" ] || { echo "package-files: no package in ARCHES=\"$(ARCHES)\" PACKAGES=\"$(PACKAGES)\""; exit 1; }; \
	echo "package: SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) VERSION=$(VERSION), wrote:"; \
	ls -l $$written

# govulncheck needs the Go vulnerability database (https://vuln.go.dev, or
# GOVULNDB=file:///path to a copy); CI machines reach neither, so CI does not
# run this target (docs/SECURITY.md).
GOVULNCHECK_VERSION ?= v1.9.0
GOVULNDB ?= https://vuln.go.dev
.PHONY: vulncheck
vulncheck: ## scan the code and its dependencies with govulncheck (needs the vulnerability database: GOVULNDB)
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) -db $(GOVULNDB) ./...

.PHONY: screenshots
screenshots: ## refresh docs/screenshots from the dashboard's browser tests (real Chromium)
	OUTPOST_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run TestDashboard ./controlplane/internal/ui/browser/

.PHONY: demo
demo: deps build ## run the whole system locally (Postgres, control plane + broker on SoftHSM2, agent on swtpm) with a simulated factory line; Ctrl-C stops it
	$(BINDIR)/outpost-testbed --dir testbed/run --bin $(BINDIR) --devices $(DEMO_DEVICES)

.PHONY: check
check: fmt-check tidy-check vet staticcheck gen-check ## all checks make test runs first: gofmt, go mod tidy, go vet, staticcheck, generated code

.PHONY: fmt-check
fmt-check: ## fail if a Go file is not gofmt-formatted
	@out="$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*' -not -path './.git/*'))"; \
	if [ -n "$$out" ]; then echo "fmt-check: not gofmt-formatted (run gofmt -w):"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## run go vet on every package
	$(GO) vet ./...
	cd $(PEERS_DIR) && $(GO) vet ./...
	cd $(PACKAGING_DIR) && $(GO) vet ./...

.PHONY: tidy-check
tidy-check: ## fail if go.mod or go.sum differ from what go mod tidy writes (also in testbed/peers and packaging)
	@$(GO) mod tidy -diff || { echo "tidy-check: go.mod/go.sum are not tidy (run go mod tidy)"; exit 1; }
	@cd $(PEERS_DIR) && $(GO) mod tidy -diff || { echo "tidy-check: $(PEERS_DIR)/go.mod/go.sum are not tidy (run go mod tidy there)"; exit 1; }
	@cd $(PACKAGING_DIR) && $(GO) mod tidy -diff || { echo "tidy-check: $(PACKAGING_DIR)/go.mod/go.sum are not tidy (run go mod tidy there)"; exit 1; }

.PHONY: gen-check
gen-check: ## fail if go generate or make proto would change a tracked file
	@if ! $(GIT) rev-parse --is-inside-work-tree >/dev/null 2>&1; then echo "gen-check: not a git checkout, skipped"; exit 0; fi; \
	before="$$($(GIT) status --porcelain)"; \
	$(MAKE) --no-print-directory proto; \
	$(GO) generate ./...; \
	after="$$($(GIT) status --porcelain)"; \
	if [ "$$before" != "$$after" ]; then echo "gen-check: generated files changed (run make proto; go generate ./... and commit):"; diff <(echo "$$before") <(echo "$$after") || true; exit 1; fi

.PHONY: staticcheck
staticcheck: ## run staticcheck (version pinned in go.mod)
	$(GO) tool staticcheck ./...

.PHONY: lint
lint: fmt-check vet staticcheck ## static analysis: gofmt, go vet, staticcheck

.PHONY: proto
proto: ## regenerate Go code from proto/*.proto (protoc + pinned protoc-gen-go)
	@files="$$(find proto -name '*.proto' 2>/dev/null)"; \
	if [ -z "$$files" ]; then echo "proto: no .proto files yet"; exit 0; fi; \
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" --go_out=. --go_opt=paths=source_relative $$files

.PHONY: test
test: deps check ## install deps, run the drift checks, then every test with the race detector
	@echo "test: go test -race -count=1 -timeout $(TEST_TIMEOUT) -v $(TEST_FLAGS) ./... (output also in test-output.log)"
	@{ $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -v $(TEST_FLAGS) ./... && \
	   cd $(PEERS_DIR) && $(GO) test -race -count=1 -v $(TEST_FLAGS) ./...; } 2>&1 | tee test-output.log; \
	skipped="$$(grep -E -- '--- SKIP' test-output.log || true)"; \
	if [ -n "$$skipped" ]; then echo "test: skipped tests are not allowed (a missing dependency must fail, not skip):"; echo "$$skipped"; exit 1; fi; \
	echo "test: $$(grep -cE -- '--- PASS' test-output.log) passed, $$(grep -cE -- '--- FAIL' test-output.log || true) failed, 0 skipped"

.PHONY: bench
bench: deps ## run the benchmarks on real backends and write docs/BENCHMARKS.md (BENCH=regexp, BENCHTIME=2s)
	{ $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./... && \
	  cd $(PEERS_DIR) && $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./...; } \
		| $(GO) run ./testbed/benchreport -out docs/BENCHMARKS.md -cmd "make bench BENCH='$(BENCH)' BENCHTIME=$(BENCHTIME)"

# Fuzzing (docs/FUZZING.md): every `func Fuzz*` in a *_test.go file,
# found by testbed/fuzz.sh, for FUZZTIME each, FUZZPAR at a time, one core
# each. FUZZ=regexp picks targets by "pkg/path.Name".
FUZZTIME ?= 10m
FUZZPAR  ?= 2
FUZZ     ?=
FUZZMINIMIZETIME ?= 5s

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 10m), FUZZPAR at a time (default 2); crashers go to <pkg>/testdata/fuzz/<Name>/
	FUZZTIME='$(FUZZTIME)' FUZZPAR='$(FUZZPAR)' FUZZ='$(FUZZ)' FUZZMINIMIZETIME='$(FUZZMINIMIZETIME)' GO='$(GO)' testbed/fuzz.sh

.PHONY: clean
clean: ## remove build output
	rm -rf $(BINDIR) test-output.log
