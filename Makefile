# agentkernel-pool: a Nomad task driver plugin for instantly starting sandboxes.
SHELL       := /bin/bash
NAME        := agentkernel-pool
BUILD_DIR   ?= build
PLUGIN_DIR  := $(BUILD_DIR)/plugins
NOMAD       ?= $(if $(NOMAD_BIN),$(NOMAD_BIN),nomad)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    := golang.org/x/tools/cmd/deadcode@v0.53.0
MODULE      := github.com/agentkernel/agentkernel-pool
BUF         := github.com/bufbuild/buf/cmd/buf@v1.75.0

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## build the plugin into build/plugins/ (and its device plugin, a symlink: README, Cluster)
	@mkdir -p $(PLUGIN_DIR)
	go build -o $(PLUGIN_DIR)/$(NAME) .
	ln -sf $(NAME) $(PLUGIN_DIR)/$(NAME)-device

# With the race detector: every race it finds is a bug. About 85 s on 2 cores;
# the pool package's tests (about 35 s, one after another) and building the
# race-instrumented test binaries bound it.
test: ## unit tests only (-short: no real agent, whether or not nomad is on PATH), with -race
	go test -short -race -count=1 ./...

e2e: ## every test, with those against a real Nomad dev agent (needs nomad; about 50 min on 2 cores)
	@command -v $(NOMAD) >/dev/null || { echo "make e2e needs nomad: put it on PATH or set NOMAD_BIN" >&2; exit 1; }
	@mkdir -p $(AGENT_TMP)
	TMPDIR=$(AGENT_TMP) NOMAD_BIN=$$(command -v $(NOMAD)) go test -count=1 -timeout 100m ./...

# The soak is e2e/TestSoak (its doc says what it runs and checks, and the short
# one make e2e runs); make soak runs it long, with these counts per runtime.
SOAK_TASKS       ?= 1020
SOAK_EXEC_TASKS  ?= 300
SOAK_RUNSC_TASKS ?= 300

soak: ## a thousand and more sandbox tasks in bursts: none may hang, lose output or leak (needs nomad; about 45 min on 2 cores with docker and gVisor)
	@command -v $(NOMAD) >/dev/null || { echo "make soak needs nomad: put it on PATH or set NOMAD_BIN" >&2; exit 1; }
	@mkdir -p $(AGENT_TMP)
	TMPDIR=$(AGENT_TMP) NOMAD_BIN=$$(command -v $(NOMAD)) SOAK_TASKS=$(SOAK_TASKS) SOAK_EXEC_TASKS=$(SOAK_EXEC_TASKS) SOAK_RUNSC_TASKS=$(SOAK_RUNSC_TASKS) \
		go test -count=1 -v -run '^TestSoak$$' -timeout 180m ./e2e/

BENCH_OUT   := $(BUILD_DIR)/bench
# Real-agent tests and benchmarks keep their agents' dirs here rather than in
# /tmp: on ext4 without a journal, creating files where many were just deleted
# is slow for minutes (see e2e/benchreport/notes.md). A dot dir: go test ./...
# must not walk into the sandboxes' chroots there.
AGENT_TMP   := $(CURDIR)/$(BUILD_DIR)/.agents

# One benchmark at a time (they share the machine): claim latency, StartTask, the
# task files' copies, then the real-agent job benchmarks (each once: they run their
# own repetitions). Every step runs even if one before it failed; BENCHMARKS.md gets
# what was measured.
bench: ## benchmarks against a real Nomad dev agent: prints the table, writes BENCHMARKS.md (needs nomad; over 80 min on 2 cores)
	@command -v $(NOMAD) >/dev/null || { echo "make bench needs nomad: put it on PATH or set NOMAD_BIN" >&2; exit 1; }
	@set -o pipefail; mkdir -p $(BENCH_OUT); rm -f $(BENCH_OUT)/*.txt; status=0; \
	export NOMAD_BIN=$$(command -v $(NOMAD)); mkdir -p $(AGENT_TMP); export TMPDIR=$(AGENT_TMP); \
	go test -run '^$$' -bench Claim -benchtime 100x -timeout 30m ./pool/ 2>&1 | tee $(BENCH_OUT)/1-claim.txt || status=1; \
	go test -run '^$$' -bench StartTaskWarm -benchtime 20x -timeout 40m ./e2e/ 2>&1 | tee $(BENCH_OUT)/2-starttask.txt || status=1; \
	go test -run '^$$' -bench Tree -benchtime 3x -timeout 20m ./driver/taskfiles/ 2>&1 | tee $(BENCH_OUT)/2-taskfiles.txt || status=1; \
	go test -run '^$$' -bench InSmall -benchtime 300x -timeout 20m ./driver/taskfiles/ 2>&1 | tee -a $(BENCH_OUT)/2-taskfiles.txt || status=1; \
	go test -run '^$$' -bench 'JobStart|JobStartPrepared|Storm|StepLoad|ClusterBurst|IdleTasks|MetricsOverhead' -benchtime 1x -timeout 150m ./e2e/ 2>&1 | tee $(BENCH_OUT)/3-jobs.txt || status=1; \
	go run ./e2e/benchreport -nomad "$$NOMAD_BIN" -notes e2e/benchreport/notes.md -o BENCHMARKS.md $(BENCH_OUT)/*.txt || status=1; \
	exit $$status

dev: build ## run a Nomad dev agent with the plugin, a warm pool and an example sandbox job
	@./example/dev.sh "$(NOMAD)" "$(CURDIR)/$(PLUGIN_DIR)"

proto: ## regenerate the protocol code from proto/
	go run $(BUF) generate

# deadcode, twice: what the program never reaches from main (outside the
# test-support packages, whose names end in "test": they exist for tests), and
# what neither the program nor any test reaches. A finding fails lint unless
# .deadcode-allow lists it.
DEADCODE_FMT := {{range .Funcs}}{{$$.Path}}.{{.Name}}{{"\n"}}{{end}}

lint: ## gofmt, go vet, staticcheck, deadcode, go mod tidy check
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1; }
	go vet ./...
	go run $(STATICCHECK) ./...
	@set -o pipefail; found=$$( { go run $(DEADCODE) -f '$(DEADCODE_FMT)' ./... | sed 's#^$(MODULE)/##' | { grep -v '^[^.]*test\.' || true; }; \
		go run $(DEADCODE) -test -f '$(DEADCODE_FMT)' ./... | sed 's#^$(MODULE)/##'; } | sort -u | \
		{ grep -vxF -f <(grep -v '^#' .deadcode-allow | grep .) || true; } ) || { echo "deadcode failed" >&2; exit 1; }; \
	if [ -n "$$found" ]; then echo "$$found"; echo "deadcode: nothing calls the functions above: delete them, or move what only tests use into a test file or a *test package" >&2; exit 1; fi
	@go mod tidy; if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changed go.mod/go.sum" >&2; git diff -- go.mod go.sum; exit 1; fi

clean: ## remove build output
	rm -rf $(BUILD_DIR)

.PHONY: help build test e2e soak bench dev proto lint clean
