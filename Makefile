# ch-toolkit: build, test, install. npm does the work; this is the
# conventional front door (make; make test; make install PREFIX=...).

PREFIX  ?= /usr/local
DESTDIR ?=
NODEDIR ?= /usr
LIBDIR  := $(DESTDIR)$(PREFIX)/lib/ch-toolkit
BINDIR  := $(DESTDIR)$(PREFIX)/bin
COMMANDS := ch-run ch-build ch-builder2tar ch-docker2tar ch-tar2dir ch-fromhost

.PHONY: all build native ts test bench install uninstall clean

all: build

build: native ts

native:
	npx node-gyp rebuild --nodedir=$(NODEDIR)

ts:
	npx tsc -p tsconfig.json

test:
	npm test

bench: build
	node bench/launch.js

# Installs the package tree under $(PREFIX)/lib/ch-toolkit with production
# dependencies only, and links the commands into $(PREFIX)/bin. Nothing is
# installed setuid: ch-run refuses to run if it is.
install: build
	install -d $(LIBDIR) $(BINDIR)
	cp -r package.json package-lock.json bin dist $(LIBDIR)/
	[ ! -d share ] || cp -r share $(LIBDIR)/
	install -d $(LIBDIR)/build/Release
	install -m 0755 build/Release/ch-run build/Release/ch-run-core $(LIBDIR)/build/Release/
	install -m 0644 build/Release/ch_run.node build/Release/ch_tar.node $(LIBDIR)/build/Release/
	cd $(LIBDIR) && npm ci --omit=dev --ignore-scripts --no-audit --no-fund
	for c in $(COMMANDS); do [ ! -e bin/$$c ] || ln -sf ../lib/ch-toolkit/bin/$$c $(BINDIR)/$$c; done

uninstall:
	for c in $(COMMANDS); do rm -f $(BINDIR)/$$c; done
	rm -rf $(LIBDIR)

clean:
	rm -rf build dist
