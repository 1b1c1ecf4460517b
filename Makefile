# SPDX-License-Identifier: GPL-2.0
#
# blktap-rs: `make` builds blktap.ko; `make run` and `make check` are the two commands a new
# user needs (see README.md). When invoked by kbuild (M=...), only the Kbuild file matters.

ifneq ($(KERNELRELEASE),)
include $(src)/Kbuild
else

SHELL := /bin/bash
TOP := $(CURDIR)
SCRIPTS := $(TOP)/scripts
MODULE := drivers/block/blktap/blktap.ko
KSRC_FMT ?= $(shell $(SCRIPTS)/fetch-kernel.sh 2>/dev/null)
CARGO_TARGET := x86_64-unknown-linux-gnu
TOOLS_BIN := $(TOP)/tools/target/$(CARGO_TARGET)/release
export KDIR KSRC
# A distribution kernel by release (make KVER=7.3.4+deb13-amd64): its headers (KHEADERS, default
# /lib/modules/KVER/build) and, when they carry no Rust metadata, its linux-source (KSOURCE,
# default /usr/src/linux-source-X.Y.tar.*); see scripts/prepare-rust-metadata.sh.
export KVER KHEADERS KSOURCE

.PHONY: all modules deps kernel kernel-perf kdir clippy fmt fmt-check rust-analyzer tools \
	tools-test check run bench stress docs man install uninstall modules_install dkms-source \
	dkms-install dkms-uninstall clean help deb stock-deps stock-check xen-check xen-check-trixie

all: modules

help:
	@echo "make             build $(MODULE) against KDIR (default: the cached debug test kernel,"
	@echo "                 after make deps; with KDIR given, nothing is installed first)"
	@echo "make run         boot a VM, load the module and serve a sample disk through a tap"
	@echo "make check       all tests: cargo tests, KUnit, VM selftests; ends 'N passed, N failed'"
	@echo "make deps        install the toolchain and packages (run by the targets that need them)"
	@echo "make kernel      build (or reuse) the debug test kernel; kernel-perf: the bench kernel"
	@echo "make kdir        print the kernel build tree in use"
	@echo "make clippy      build the module with CLIPPY=1; fmt / fmt-check: rustfmt"
	@echo "make rust-analyzer  write rust-project.json for the module"
	@echo "make tools       build the Rust userspace (tools/)"
	@echo "make bench       benchmarks against null_blk, ublk, loop and tapdisk over NBD (perf kernel)"
	@echo "make stress      long fault, fuzz and teardown runs on the debug kernel"
	@echo "make xen-check   Xen end-to-end suite: Xen 4.17 + dom0 in QEMU, PV/PVH guests on tapdevs"
	@echo "make xen-check-trixie  the same on Debian 13: Xen 4.20, the stock 7.3.4 kernel, the .debs, block-tap"
	@echo "make docs        check Documentation/ renders (rst2html, warnings are errors)"
	@echo "make man         generate the man pages of blktapd and blktap-ctl"
	@echo "make install     install the module (for the tree make built it against), tools, udev"
	@echo "                 rules and man pages, run depmod (DESTDIR, PREFIX, INSTALL_MOD_PATH"
	@echo "                 honoured); make uninstall removes exactly that"
	@echo "make modules_install  install only the module (then depmod)"
	@echo "make dkms-install     register, build and install the module with DKMS (KDIR: the"
	@echo "                      kernel's full build tree, or KVER: a distribution kernel, whose"
	@echo "                      missing prerequisites it installs); make dkms-uninstall removes it"
	@echo "make KVER=<release>   build blktap.ko for an installed distribution kernel (headers"
	@echo "                      without Rust metadata: prepared once from its linux-source)"
	@echo "make stock-deps KVER=<release>  install what that needs (root): headers, source,"
	@echo "                      the kernel's rustc and bindgen"
	@echo "make stock-check      build through DKMS for Debian's stock kernels (7.3.4, sid's 7.2.13;"
	@echo "                      KVER=<release>: that one) and run the selftests on each"
	@echo "                      stock vmlinuz in QEMU (root)"
	@echo "make deb              build the blktap-rs-dkms and blktap-rs-tools Debian packages"
	@echo "Variables: KDIR=<kernel build tree>, KSRC=<kernel source tree>, BLKTAP_KVM=1 (use KVM),"
	@echo "           KVER=<release>, KHEADERS=<its headers>, KSOURCE=<its linux-source tarball>"

deps:
	@$(SCRIPTS)/bootstrap.sh

kernel: deps
	@$(SCRIPTS)/build-kernel.sh debug

kernel-perf: deps
	@$(SCRIPTS)/build-kernel.sh perf

kdir:
	@if [ -n "$(KDIR)" ]; then echo "$(KDIR)"; else $(SCRIPTS)/build-kernel.sh debug; fi

# Against your own kernel (KDIR given) nothing is installed first: `make deps` sets up the test
# kernel's toolchain (rustup, bindgen-cli, QEMU, ...), which an out-of-tree build does not use.
# With KVER, the DKMS build path (scripts/dkms-make.sh): preflight, Rust metadata, build.
modules: $(if $(KDIR)$(KVER),,deps)
ifneq ($(KVER),)
	@$(SCRIPTS)/dkms-make.sh "$(or $(KHEADERS),$(KDIR),/lib/modules/$(KVER)/build)" modules "$(KVER)"
else
	@$(SCRIPTS)/kmake.sh modules
endif

stock-deps:
	@$(SCRIPTS)/stock-kernel.sh deps "$(or $(KVER),$(shell uname -r))"

stock-check:
	@$(SCRIPTS)/test-stock-kernel.sh --release "$(or $(KVER),all)"

deb:
	@$(SCRIPTS)/deb.sh

clippy: deps
	@$(SCRIPTS)/kmake.sh modules CLIPPY=1 2>&1 | tee /dev/stderr | { ! grep -qE '^(warning|error)'; }

rust-analyzer: deps
	@$(SCRIPTS)/kmake.sh rust-analyzer

fmt: deps
	@rustfmt --config-path "$$($(SCRIPTS)/fetch-kernel.sh)/.rustfmt.toml" drivers/block/blktap/blktap.rs
	@cd tools && cargo fmt

fmt-check: deps
	@rustfmt --check --config-path "$$($(SCRIPTS)/fetch-kernel.sh)/.rustfmt.toml" drivers/block/blktap/blktap.rs
	@cd tools && cargo fmt --check

tools:
	@cd tools && cargo build --release --target $(CARGO_TARGET)

tools-test:
	@cd tools && cargo test --target $(CARGO_TARGET)

check: deps
	@$(SCRIPTS)/check.sh

run: deps
	@$(SCRIPTS)/run-demo.sh

bench: deps
	@$(SCRIPTS)/bench.sh

stress: deps
	@$(SCRIPTS)/stress.sh

xen-check: deps
	@$(SCRIPTS)/xen-check.sh

# The Debian 13 flavour (trixie, Xen 4.20, the stock kernel, the .debs): CI's third step.
xen-check-trixie: deps
	@$(SCRIPTS)/xen-check.sh --flavour trixie

docs:
	@$(SCRIPTS)/docs.sh

man: tools
	@$(SCRIPTS)/install.sh man

# No prerequisites: `make` and `make tools` run as the user first, `sudo make install` after.
install:
	@$(SCRIPTS)/install.sh install

uninstall:
	@$(SCRIPTS)/install.sh uninstall

modules_install:
	@$(SCRIPTS)/install.sh modules_install

dkms-source:
	@$(SCRIPTS)/install.sh dkms-source

dkms-install:
	@$(SCRIPTS)/install.sh dkms-install

dkms-uninstall:
	@$(SCRIPTS)/install.sh dkms-uninstall

clean:
	@if [ -n "$(KDIR)" ] || [ -d "$${XDG_CACHE_HOME:-$$HOME/.cache}/blktap-rs/build" ]; then \
		$(SCRIPTS)/kmake.sh clean 2>/dev/null || true; fi
	@rm -f rust-project.json
	@cd tools && cargo clean 2>/dev/null || true

endif
