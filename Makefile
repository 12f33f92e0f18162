# offpeak: build, test and install.
#
#   make                      build ./build/offpeak and ./build/offpeak-simulate
#   make test                 go test -race ./... (what CI runs)
#   make install DESTDIR=/tmp/pkg PREFIX=/usr
#
# install puts the binaries, the systemd units (ExecStart= pointing at the
# installed binary), man pages and bash/zsh/fish completions below
# $(DESTDIR)$(PREFIX). Man pages honour SOURCE_DATE_EPOCH.
#
# The binaries are static (CGO_ENABLED=0: Go's own DNS resolver and
# /etc/passwd lookups), so one build runs on any distribution's userland and
# the idle agent does not map libc. Go's resolver reads /etc/hosts and
# resolv.conf but no NSS modules (mDNS .local, sssd): name lock-service
# endpoints in DNS or /etc/hosts, or build with CGO_ENABLED=1. offpeak-simulate is separate because it
# links an embedded etcd server that hosts do not need.

GO          ?= go
PREFIX      ?= /usr
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
BUILDDIR    ?= build
GOFLAGS_BUILD ?= -trimpath
CGO_ENABLED ?= 0

# Stamped into the binaries (offpeak version, offpeak --version, and the
# version built-in plugins report). The build date follows SOURCE_DATE_EPOCH
# when it is set, so a pinned date gives a reproducible build.
VERSION     ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.0.0-devel)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE        ?= $(shell date -u -d "@$${SOURCE_DATE_EPOCH:-$$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
VERSION_PKG := github.com/offpeak/offpeak/internal/version
LDFLAGS     := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).date=$(DATE)

BIN   := $(BUILDDIR)/offpeak
SIM   := $(BUILDDIR)/offpeak-simulate
UNITS := $(wildcard contrib/systemd/*.service contrib/systemd/*.timer) contrib/fleetlock/offpeak-fleetlock.service

.PHONY: all build docs completions install test vet timer clean

all: build

# Always hand the build to go: it knows when the binary is up to date.
build:
	CGO_ENABLED=$(CGO_ENABLED) $(GO) build $(GOFLAGS_BUILD) -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/offpeak
	CGO_ENABLED=$(CGO_ENABLED) $(GO) build $(GOFLAGS_BUILD) -ldflags '$(LDFLAGS)' -o $(SIM) ./cmd/offpeak-simulate

docs:
	rm -rf $(BUILDDIR)/man
	$(GO) run ./tools/gendocs man $(BUILDDIR)/man/man1

completions: build
	mkdir -p $(BUILDDIR)/completions
	$(BIN) completion bash > $(BUILDDIR)/completions/offpeak.bash
	$(BIN) completion zsh > $(BUILDDIR)/completions/_offpeak
	$(BIN) completion fish > $(BUILDDIR)/completions/offpeak.fish

install: build docs completions
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/offpeak
	install -D -m 0755 $(SIM) $(DESTDIR)$(BINDIR)/offpeak-simulate
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do \
		sed 's|/usr/bin/offpeak|$(BINDIR)/offpeak|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; \
	done
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 $(BUILDDIR)/man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -D -m 0644 $(BUILDDIR)/completions/offpeak.bash $(DESTDIR)$(BASHCOMPDIR)/offpeak
	install -D -m 0644 $(BUILDDIR)/completions/_offpeak $(DESTDIR)$(ZSHCOMPDIR)/_offpeak
	install -D -m 0644 $(BUILDDIR)/completions/offpeak.fish $(DESTDIR)$(FISHCOMPDIR)/offpeak.fish

# The race detector needs cgo, whatever the build uses.
test:
	CGO_ENABLED=1 $(GO) test -race ./...

vet:
	$(GO) vet ./...

# Regenerate the shipped timer from the built-in default policy (a test
# fails when they differ).
timer: build
	mkdir -p $(BUILDDIR)/empty-root
	$(BIN) --root $(BUILDDIR)/empty-root systemd timer > contrib/systemd/offpeak.timer

clean:
	rm -rf $(BUILDDIR)
