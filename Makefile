# Quick start (Debian 12, root):  make run   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NFSCONF := $(VENV)/bin/nfsconf

# FUSE servers the built-in profiles drive, and the tools that build their sources.
APT_FUSE := fuse3 mount bindfs fuse-overlayfs squashfuse squashfs-tools unionfs-fuse \
	mergerfs fuse-zip zip archivemount rclone
# The knfsd guest runs on the host's root: knfsd's daemons, modprobe, ip(8) for loopback.
# Both engines need them; User-Mode Linux needs nothing else (`uml:debian:sid` is downloaded
# into the cache with sid's glibc beside it, not installed). python-libnfs (NFS-BYNAME) builds against libnfs-dev.
APT_GUEST := nfs-kernel-server nfs-common rpcbind kmod iproute2 gcc python3-dev libnfs-dev
# The Ganesha transport, the HTML check.
APT_NFS := nfs-ganesha nfs-ganesha-vfs rpcbind gcc python3-dev libnfs-dev
# qemu for bzImages: virtme-ng reads the kernel's version with file(1) and strings(1)
# (binutils)
APT_VM := $(APT_GUEST) qemu-system-x86 udev busybox-static file binutils
APT_REPORT := chromium
# `nfsconf kernel build` (the LOOKUP_HANDLE kernel the tests boot); ccache makes a rebuild
# with another series of the same source cheap
APT_KBUILD := build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils git ccache
APT_TEST := $(APT_FUSE) $(APT_NFS) $(APT_VM) $(APT_REPORT) $(APT_KBUILD)

.PHONY: run test apt apt-run apt-knfsd apt-test venv lint clean

# The main job: every installed profile through knfsd (NFSv3, NFSv4.1, both exports) and
# locally, on Debian's newest kernel (sid's 7.2, the line the LOOKUP_HANDLE series is ported
# to) as User-Mode Linux in seccomp mode, the matrix split over one guest per core and one
# more (at most 8): a UML guest is one CPU that waits now and then (for a server, for knfsd),
# and on 2 cores a third guest fills them (3 min 9 s against 3 min 37 s with two).
GUESTS ?= $(shell n=$$(nproc); echo $$(( n < 8 ? n + 1 : 8 )))
run: apt-run venv $(VENV)/.installed-nfs
	$(NFSCONF) run --transport knfsd --kernel uml:debian:sid --jobs $(GUESTS)

test: apt-test venv $(VENV)/.installed-nfs
	$(PY) -m ruff check nfsconf tests scenarios
	$(PY) -m pytest -ra -n 2 --dist loadgroup --durations=30 tests

apt-run:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_FUSE) $(APT_GUEST)"

# what `nfsconf run --transport knfsd` needs on either engine (a CI job running one shard)
apt-knfsd:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_FUSE) $(APT_VM)"

apt-test:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_TEST)"

# Installs only what is missing, so a second run costs a dpkg query.
apt:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# python-libnfs builds against libnfs-dev (apt-test): only the tests and NFS runs need it
$(VENV)/.installed-nfs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,nfs]'
	touch $@

lint: venv
	$(PY) -m ruff check nfsconf tests scenarios

clean:
	rm -rf $(VENV) *.egg-info
