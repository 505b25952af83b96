# outpost — the front door. Every target is idempotent and says what it does.
# The two commands a newcomer needs: `make demo` and `make test`.

SHELL      := /bin/bash
# A soak piped through grep must still fail the target when its test fails.
.SHELLFLAGS := -o pipefail -c
GO         ?= go
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -X github.com/outpost-edge/outpost/internal/cli.Version=$(VERSION) \
              -X github.com/outpost-edge/outpost/internal/cli.Commit=$(COMMIT)
export CGO_ENABLED := 1

QEMU       := qemu-aarch64-static -L /usr/aarch64-linux-gnu
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CURDIR)/.cache/bin/staticcheck-$(STATICCHECK_VERSION)
PORT       ?= 8080
LISTEN     ?= 127.0.0.1:$(PORT)

.PHONY: all deps sysdeps check-fresh staticcheck imports build test test-arm64 rehearsal fmt-check vet lint bench chaos fuzz demo demo-cli cross dist clean help

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

sysdeps: ## install every missing Debian package any target needs (apt-get as root, else prints the command)
	@bash scripts/sysdeps.sh all

deps: ## build packages (gcc, libc6-dev, npm), then ONNX Runtime (amd64+arm64) and Silero VAD, pinned by sha256
	@bash scripts/sysdeps.sh build
	@bash scripts/deps.sh
	@echo "deps: go mod download"
	@$(GO) mod download

build: deps ## build bin/outpost
	@echo "build: bin/outpost $(VERSION) (a first build compiles cgo and the standard library: a few minutes)"
	@$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/outpost ./cmd/outpost

fmt-check: ## fail if gofmt would change anything
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi; echo "fmt: ok"

vet: ## go vet
	@$(GO) vet ./... && echo "vet: ok"

$(STATICCHECK):
	@echo "lint: installing staticcheck $(STATICCHECK_VERSION) from the Go module proxy"
	@mkdir -p $(CURDIR)/.cache/bin
	@GOBIN=$(CURDIR)/.cache/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@mv $(CURDIR)/.cache/bin/staticcheck $(STATICCHECK)

staticcheck: $(STATICCHECK) ## staticcheck (pinned version)
	@$(STATICCHECK) ./... && echo "staticcheck: ok"

imports: ## the package import rules (docs/ARCHITECTURE.md) and no bare time.Sleep in tests
	@$(GO) test -count=1 -run 'TestImportRules|TestNoBareSleeps' ./internal/deptest/ >/dev/null && echo "imports: ok (and every time.Sleep in a test says why)"

lint: fmt-check vet staticcheck imports ## gofmt, vet, staticcheck, import rules

test: deps lint ## deps, lint (gofmt, vet, staticcheck, import rules), every test with -race (power cuts on FUSE included), then the arm64 suite under qemu
	@bash scripts/sysdeps.sh test
	@bash scripts/deps.sh
	@echo "test: go test -race ./... (a cold build cache compiles for a few minutes first)"
	$(GO) test -race -count=1 -timeout 15m ./...
	@$(MAKE) --no-print-directory test-arm64

rehearsal: deps ## the field rehearsal alone (part of make test; root): release tarball → install.sh → units in bubblewrap → every flow
	@bash scripts/sysdeps.sh test
	@bash scripts/deps.sh
	$(GO) test -count=1 -v -timeout 10m -run TestRehearsal ./internal/rehearsal/

test-arm64: deps ## pure-Go packages built for arm64 and run under qemu (incl. SIGKILL rounds)
	GOARCH=arm64 CGO_ENABLED=0 OUTBOX_CRASH_EXEC="$(QEMU)" OUTPOST_CRASH_ROUNDS=20 \
	  $(GO) test -count=1 -timeout 10m -exec "$(QEMU)" ./runtime/ ./outbox/

cross: deps ## build bin/linux_arm64/outpost (cgo, aarch64-linux-gnu-gcc)
	@bash scripts/sysdeps.sh cross
	@bash scripts/deps.sh
	@echo "cross: bin/linux_arm64/outpost $(VERSION)"
	@CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux_arm64/outpost ./cmd/outpost

dist: deps ## release tarballs for amd64 and arm64 in dist/out, with SHA256SUMS
	@bash scripts/sysdeps.sh cross
	@bash scripts/deps.sh
	@bash scripts/dist.sh '$(VERSION)' '$(LDFLAGS)' amd64 arm64

bench: deps ## benchmarks with ratios against baselines measured in the same run
	@echo "== runtime/onnx: wrapper ÷ raw onnxruntime_go, 60k interleaved pairs each (a p99 over 12k moves ±2.5 % on its own)"
	$(GO) test -run '^$$' -bench RunOverhead -benchtime 60000x -count 1 ./runtime/onnx/
	$(GO) test -run '^$$' -bench . -skip 'RunOverhead|CropDiseaseProfile' -benchtime 2s -count 1 ./runtime/onnx/ ./models/
	$(GO) test -run '^$$' -bench CropDiseaseProfile -benchtime 1x -count 1 ./models/
	$(GO) test -run '^$$' -bench 'Append|Fdatasync' -benchtime 50000x -count 1 ./outbox/
	$(GO) test -run '^$$' -bench 'Drain|EvidenceRTT' -benchtime 1x -count 1 ./sync/
	$(GO) test -run '^$$' -bench 'HTTPInfer|FirstAudio' -benchtime 300x -count 1 ./internal/daemon/
	$(GO) test -run '^$$' -bench Speak -benchtime 50x -count 1 ./tts/
	$(GO) test -run '^$$' -bench BringYourOwn -benchtime 100x -count 1 ./internal/cli/
	OUTPOST_FLEET_DEVICES=10000 $(GO) test -run '^$$' -bench Fleet -benchtime 1x -count 1 -timeout 30m ./hub/
	OUTPOST_PAGE_RESULTS=1000000 $(GO) test -run '^$$' -bench HubPage -benchtime 20x -count 1 -timeout 30m ./hub/
	OUTPOST_PAGE_RESULTS=10000000 $(GO) test -run '^$$' -bench HubPagePostgres -benchtime 10x -count 1 -timeout 60m ./hub/

chaos: ## soaks: 1000 SIGKILL rounds during appends; 1000 power cuts (FUSE); 100 broker kill/restarts during a drain; 6 devices and the collector after a 7-min outage in a 60 s window; every pair of paths ×10 with kills; restarts after an activation
	OUTPOST_CRASH_ROUNDS=1000 $(GO) test -count=1 -timeout 30m -run 'TestCrash' -v ./outbox/ | grep -E 'crash rounds|^(ok|FAIL|---)'
	OUTPOST_SYNC_RESTARTS=100 $(GO) test -count=1 -timeout 30m -run 'TestSync_BrokerRestarts' -v ./sync/ | grep -E 'broker restarts|^(ok|FAIL|---)'
	OUTPOST_POWERCUT_ROUNDS=1000 $(GO) test -count=1 -timeout 60m -run 'TestPowerCut_(Outbox|HubStore)' -v ./internal/powercut/ | grep -E 'power cuts|^(ok|FAIL|---)'
	OUTPOST_POWERCUT_ROUNDS=1000 $(GO) test -count=1 -timeout 30m -run 'TestPowerCut_Budget$$' -v ./sync/ | grep -E 'power cuts|^(ok|FAIL|---)'
	OUTPOST_POWERCUT_ROUNDS=1000 $(GO) test -count=1 -timeout 30m -run 'TestPowerCut_AtomicWrite$$' -v ./internal/atomicfile/ | grep -E 'power cuts|^(ok|FAIL|---)'
	OUTPOST_OUTAGE=7m OUTPOST_WINDOW=60s $(GO) test -count=1 -timeout 15m -run 'TestSync_ShortLinkWindow' -v ./sync/ | grep -E 'outage|^(ok|FAIL|---)'
	OUTPOST_MIXED_ROUNDS=10 $(GO) test -count=1 -timeout 30m -run 'TestMixedPaths' -v ./internal/cli/ | grep -E 'mixed paths|MQTT cut|^(ok|FAIL|---)'
	OUTPOST_GUARD_ROUNDS=20 $(GO) test -count=1 -timeout 15m -run 'TestModelUpdate_(CleanRestartsAfterActivation|KillMidSwapAndCrashLoop)' -v ./internal/daemon/ | grep -E 'clean restarts|rolled|^(ok|FAIL|---)'

fuzz: deps ## a short fuzzing session on every decoder
	$(GO) test -run '^$$' -fuzz FuzzDecodeWAV -fuzztime 60s ./models/
	$(GO) test -run '^$$' -fuzz FuzzManifest -fuzztime 60s ./models/
	$(GO) test -run '^$$' -fuzz FuzzDecodeImage -fuzztime 60s ./models/
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime 60s ./outbox/
	$(GO) test -run '^$$' -fuzz FuzzDecodeBatch -fuzztime 60s ./sync/
	$(GO) test -run '^$$' -fuzz FuzzDecodeAck -fuzztime 60s ./sync/
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./models/pkg/
	$(GO) test -run '^$$' -fuzz FuzzDecodeCmd -fuzztime 60s ./sync/
	$(GO) test -run '^$$' -fuzz FuzzReadBundle -fuzztime 60s ./sync/
	$(GO) test -run '^$$' -fuzz FuzzSignedBatch -fuzztime 60s ./sync/

demo: build ## outpost serve --demo: embedded broker + hub, samples flow to it, kiosk URL printed (Ctrl-C stops)
	@if (exec 3<>/dev/tcp/$(firstword $(subst :, ,$(LISTEN)))/$(lastword $(subst :, ,$(LISTEN)))) 2>/dev/null; then \
	  echo "demo: $(LISTEN) is already in use by another program; run: make demo PORT=8081 (or LISTEN=host:port)" >&2; exit 1; fi
	@rm -rf artifacts/demo-data && mkdir -p artifacts
	@echo "demo: starting outpost serve --demo (data in artifacts/demo-data); open the kiosk URL below, Ctrl-C to stop"
	@./bin/outpost serve --demo --data-dir artifacts/demo-data --listen $(LISTEN)

demo-cli: build ## the CLI alone: speak a sentence, pad it with silence, find the speech in it
	@bash scripts/sysdeps.sh demo-cli
	@mkdir -p artifacts
	@espeak-ng -v en -w artifacts/demo-raw.wav "Good morning. The maize in the north field has brown spots on its leaves."
	@sox -q artifacts/demo-raw.wav -r 16000 artifacts/demo-speech.wav pad 1.5 2
	@./bin/outpost infer --model silero-vad --format text artifacts/demo-speech.wav
	@./bin/outpost infer --model crop-disease --format text --lang sw models/crop-disease/samples/rust.jpg

check-fresh: ## run the README's commands in a fresh debootstrap minbase chroot (root; 10-20 min)
	@bash scripts/fresh-machine.sh

clean: ## remove build outputs (keeps the .cache of fetched deps)
	rm -rf bin artifacts outpost-data dist/out
