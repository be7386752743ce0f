# hutch: build, demo, test, bench. Targets that install packages or create
# users need root (they use apt-get and useradd); hutch itself never runs
# VMs as root.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
DEMO_USER ?= hutchdemo
CACHE ?= /var/tmp/hutch-test-cache
PACKAGES := qemu-system-x86 qemu-utils passt busybox-static linux-image-cloud-amd64 \
	syslinux syslinux-common mtools dosfstools socat curl procps iproute2 uidmap ovmf grub-efi-amd64-bin grub-common isolinux xorriso vncsnapshot \
	openssh-client debootstrap e2fsprogs \
	podman containerd containernetworking-plugins slirp4netns runc util-linux docker.io systemd

.PHONY: build deps demo test unit bench fuzz
# Static, so that hutch can be the micro VM's init on a host without
# busybox, and hutch-agent a guest's init. hutch-runtime finds hutch-agent
# beside itself. hutch-agent is stripped: it sits in every guest's RAM.
build:
	CGO_ENABLED=0 $(GO) build -o bin/hutch ./cmd/hutch
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.commit=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		-o bin/hutch-runtime ./cmd/hutch-runtime
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o bin/hutch-agent ./cmd/hutch-agent

deps:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PACKAGES) >/dev/null

# Boot the test guest as an unprivileged user with a forwarded port, fetch
# its page, and clean up.
demo: deps build
	./scripts/demo.sh "$(DEMO_USER)" "$(CACHE)"

# Every test, one package at a time: the end-to-end packages each boot VMs
# under TCG on a small machine, and two at once would only slow both. The
# accelerator hutch will pick here is printed first.
# Then each fuzz target for a bounded time (the corpus in
# testdata/fuzz is replayed by go test itself).
test: deps
	@echo "accelerator on this host (hutch check):"; $(GO) run ./cmd/hutch check | grep -E '^(CHECK|kvm|accel) '
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m -p 1 ./...
	FUZZTIME=5s GO=$(GO) ./scripts/fuzz.sh

fuzz:
	GO=$(GO) ./scripts/fuzz.sh

unit:
	$(GO) test -count=1 ./internal/...

# libvirt's session mode, the peer the boot benchmark compares with; only
# the benchmark needs it (libvirt-daemon is the session daemon itself).
BENCH_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients

bench: deps build
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_PACKAGES) >/dev/null
	./bench/run.sh $(BENCH_ARGS)
