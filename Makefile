# ch-toolkit: build, test, install. tools/build.js does the building (npm
# scripts call it too); this is the conventional front door:
#
#   make                       dependencies (npm ci, once), then build (what changed)
#   make test                  the test suite (as root: see README)
#   make install PREFIX=/opt/ch-toolkit [DESTDIR=...]
#   make install-spank         also the Slurm SPANK plugin (srun --ch-image=...)
#   make uninstall / make clean
#
# Needs Node >= 20 with npm, a C/C++ toolchain and Python 3 (node-gyp).
# Node's headers are taken from the running Node (or npm_config_nodedir);
# see tools/build.js.

PREFIX  ?= /usr/local
DESTDIR ?=
NODE    ?= node
NPM     ?= npm
LIBDIR  := $(DESTDIR)$(PREFIX)/lib/ch-toolkit
BINDIR  := $(DESTDIR)$(PREFIX)/bin
MANDIR  := $(DESTDIR)$(PREFIX)/share/man/man1
# The Node commands; ch-run is linked to its launcher directly (no extra exec).
NODE_COMMANDS := ch-build ch-builder2tar ch-docker2tar ch-tar2dir ch-fromhost ch-pull ch-convert ch-image

.PHONY: all build native ts test bench install install-spank uninstall clean

all: build

# Dependencies (node-gyp, node-addon-api, TypeScript, esbuild), without
# running our own install script: the build below does that work.
node_modules/.package-lock.json: package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund

# What each half of the build reads, and a stamp it leaves: a half is built
# again only when one of its inputs changed, so `make install` after `make`
# builds nothing.
NATIVE_IN    := binding.gyp tools/probe.js protocol.json tools/protocol.js $(shell find native -type f)
TS_IN        := package.json tsconfig.json tools/build.js tools/ch-run-loader.cjs protocol.json tools/protocol.js \
                $(shell find lib -type f -not -name '*.gen.ts')
NATIVE_STAMP := build/Release/.ch-built
TS_STAMP     := dist/.ch-built

build: $(NATIVE_STAMP) $(TS_STAMP)

$(NATIVE_STAMP): node_modules/.package-lock.json $(NATIVE_IN)
	$(NODE) tools/build.js native
	touch $@

# After the native half (order only): the code cache is made by running ch-run's front end.
$(TS_STAMP): node_modules/.package-lock.json $(TS_IN) | $(NATIVE_STAMP)
	$(NODE) tools/build.js ts
	touch $@

native: node_modules/.package-lock.json
	$(NODE) tools/build.js native

ts: node_modules/.package-lock.json
	$(NODE) tools/build.js ts

test: build
	$(NPM) test

bench: build
	$(NODE) bench/launch.js

# What runs: the command bundles (self-contained: no node_modules needed), the
# native parts, package.json (the version, and how the bundles find the
# package root). Nothing is installed setuid: ch-run refuses to run if it is.
install: $(NATIVE_STAMP) $(TS_STAMP)
	install -d $(LIBDIR)/bin $(LIBDIR)/dist $(LIBDIR)/build/Release $(BINDIR) $(MANDIR)
	install -m 0644 package.json $(LIBDIR)/
	install -m 0644 dist/*.cjs $(LIBDIR)/dist/
	for c in dist/ch-run-main.cjs.cache dist/ch-run-devices.cjs.cache dist/ch-run-yaml.cjs.cache; do [ ! -f $$c ] || install -m 0644 $$c $(LIBDIR)/dist/; done
	install -m 0644 bin/package.json $(LIBDIR)/bin/
	for c in $(NODE_COMMANDS) ch-spank-stage; do install -m 0755 bin/$$c $(LIBDIR)/bin/; done
	install -m 0755 build/Release/ch-run build/Release/ch-run-core $(LIBDIR)/build/Release/
	install -m 0644 build/Release/ch_tar.node build/Release/ch_host.node $(LIBDIR)/build/Release/
	[ ! -d share ] || cp -R share $(LIBDIR)/
	ln -sf ../lib/ch-toolkit/build/Release/ch-run $(BINDIR)/ch-run
	for c in $(NODE_COMMANDS); do ln -sf ../lib/ch-toolkit/bin/$$c $(BINDIR)/$$c; done
	install -m 0644 dist/man/*.1 $(MANDIR)/

# The SPANK plugin (native/spank/), built with the native half where Slurm's
# headers are. It finds the package three levels above itself, so it goes
# into the same LIBDIR as `make install`; then add to plugstack.conf:
#   required $(PREFIX)/lib/ch-toolkit/build/Release/ch_spank.so
install-spank: install
	@[ -f build/Release/ch_spank.so ] || { echo "make install-spank: build/Release/ch_spank.so not built: Slurm's development headers (<slurm/spank.h>: libslurm-dev, slurm-devel) are missing, or set CH_SPANK_CFLAGS and run node tools/build.js spank"; exit 1; }
	install -m 0755 build/Release/ch_spank.so build/Release/ch-spank-hold build/Release/ch-spank-join $(LIBDIR)/build/Release/
	@echo "plugstack.conf line: required $(PREFIX)/lib/ch-toolkit/build/Release/ch_spank.so"

uninstall:
	for c in ch-run $(NODE_COMMANDS); do rm -f $(BINDIR)/$$c; done
	for c in ch-run $(NODE_COMMANDS); do rm -f $(MANDIR)/$$c.1; done
	rm -rf $(LIBDIR)

clean:
	rm -rf build dist lib/util/protocol.gen.ts bin/ch-run
