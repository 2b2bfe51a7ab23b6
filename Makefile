# ngx_http_llm_router_module
#
#   make            build/ngx_http_llm_router_module.so against Debian's nginx
#                   (nginx-dev), or NGINX_SRC=/path/to/nginx-x.y.z make;
#                   and build/llm-router, the offline companion
#   make test       install what the tests need, build, run every test
#   make test-asan  the same with AddressSanitizer and UBSan, in build/asan
#   make test-valgrind  every test with nginx under valgrind memcheck
#   make fuzz       each libFuzzer target of the core for FUZZ_SECONDS (60)
#   make fuzz-regress  the fuzzers' seeds and regressions, once each
#   make demo       route between local mock providers on 127.0.0.1:8080
#   make bench      the core's cost per request, then plain nginx, the
#                   module and Portkey side by side with wrk (bench/http)
#   make routing-eval  learned routing on real outcomes (shared/routing-eval)
#   make deb        the Debian packages, into build/ (docs/install.md)

NGINX_SRC   ?=
BUILD       := $(CURDIR)/build
NGINX_BUILD := $(BUILD)/nginx
MODULE      := $(BUILD)/ngx_http_llm_router_module.so

SRC_DIR     := ngx_http_llm_router_module
CORE_DIR    := $(SRC_DIR)/core
CORE_SRCS   := $(wildcard $(CORE_DIR)/*.c)
MODULE_DEPS := config $(wildcard $(SRC_DIR)/*.[ch] $(CORE_DIR)/*.[ch])

CC          ?= cc
CORE_CFLAGS := -std=c99 -O2 -g -Wall -Wextra -pedantic -Werror -I$(CORE_DIR)

# SANITIZE=address,undefined builds everything with those sanitizers:
# `make test-asan` does, into build/asan, with an nginx of its own built
# from Debian's source whose pools allocate each block apart
# (NGX_DEBUG_PALLOC), so that an overflow in a pool is caught too
SANITIZE    ?=
ifneq ($(SANITIZE),)
SANITIZE_CFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
CORE_CFLAGS += $(SANITIZE_CFLAGS)
NGX_CFLAGS  := $(SANITIZE_CFLAGS) -DNGX_DEBUG_PALLOC=1
NGX_SANITIZE := --with-ld-opt=-fsanitize=$(SANITIZE) \
                --error-log-path=stderr
endif

UNIT_TESTS  := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(wildcard t/unit/*.c))

CLI         := $(BUILD)/llm-router
CLI_SRCS    := $(wildcard tools/llm-router/*.c)
CLI_CFLAGS  := $(CORE_CFLAGS) -D_POSIX_C_SOURCE=200809L -Itools/llm-router

# Debian's nginx is built --with-compat; its configure flags are shipped
# in nginx-dev, and a module built with them loads into that nginx.
ifeq ($(NGINX_SRC),)
CONFIGURE := . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}"
NGINX_TREE := /usr/share/nginx/src
else
CONFIGURE := $$(test -x configure && echo ./configure \
                || echo ./auto/configure) --with-compat
NGINX_TREE := $(NGINX_SRC)
endif

.PHONY: all module cli nginx deps test test-asan test-valgrind unit bench \
        routing-eval demo clean FORCE

all: module cli

include fuzz/fuzz.mk
include bench/bench.mk

module: $(MODULE)

cli: $(CLI)

# the tree is configured again when NGINX_SRC changes
$(BUILD)/nginx-tree: FORCE
	@mkdir -p $(BUILD)
	@echo '$(NGINX_TREE)' | cmp -s - $@ || echo '$(NGINX_TREE)' > $@

$(NGINX_BUILD)/objs/Makefile: config $(BUILD)/nginx-tree
	rm -rf $(NGINX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_TREE) $(NGINX_BUILD)
	cd $(NGINX_BUILD) && CFLAGS='$(NGX_CFLAGS)' bash -c \
	    '$(CONFIGURE) $(NGX_SANITIZE) --add-dynamic-module=$(CURDIR)' \
	    > $(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(NGINX_BUILD)/objs/Makefile $(MODULE_DEPS)
	$(MAKE) -C $(NGINX_BUILD) -f objs/Makefile modules
	@# a new file, not new bytes in the old one: a running nginx maps it
	cp $(NGINX_BUILD)/objs/ngx_http_llm_router_module.so $@.tmp
	mv -f $@.tmp $@

# the nginx binary, of an NGINX_SRC tree
nginx: $(NGINX_BUILD)/objs/Makefile
	$(MAKE) -C $(NGINX_BUILD) -f objs/Makefile binary

$(CLI): $(CLI_SRCS) tools/llm-router/llm_router.h $(CORE_SRCS) \
        $(CORE_DIR)/llmr.h
	mkdir -p $(BUILD)
	$(CC) $(CLI_CFLAGS) $(CPPFLAGS) $(CFLAGS) -o $@ $(CLI_SRCS) $(CORE_SRCS) \
	    $(LDFLAGS) -lyajl -lcurl -lm

$(BUILD)/t/%: t/unit/%.c $(CORE_SRCS) $(CORE_DIR)/llmr.h
	mkdir -p $(BUILD)/t
	$(CC) $(CORE_CFLAGS) -o $@ $< $(CORE_SRCS) -lyajl -lm

unit: $(UNIT_TESTS)

$(BUILD)/bench-core: bench/core.c $(CORE_SRCS) $(CORE_DIR)/llmr.h
	mkdir -p $(BUILD)
	$(CC) $(CORE_CFLAGS) -D_POSIX_C_SOURCE=200809L -o $@ bench/core.c \
	    $(CORE_SRCS) -lyajl -lm

bench: $(BUILD)/bench-core
	$(BUILD)/bench-core
	$(MAKE) bench-http

ROUTING_EVAL ?= ../shared/routing-eval

routing-eval: cli
	./tools/routing-eval $(ROUTING_EVAL)

deps:
	@./tools/install-deps

test: deps
	$(MAKE) all unit
	@# the SDKs that t/96-sdk.t runs, when missing or older than the lock
	test t/sdk/node_modules -nt t/sdk/package-lock.json \
	    || { cd t/sdk && npm ci --no-audit --no-fund && touch node_modules; }
	prove -I t/lib t/

test-asan: deps
	$(MAKE) BUILD=$(BUILD)/asan SANITIZE=address,undefined \
	    NGINX_SRC=$$(./tools/apt-source nginx nginx $(BUILD)/src) \
	    all unit nginx
	./tools/test-sanitized asan $(BUILD)/asan

test-valgrind:
	./tools/install-deps valgrind
	$(MAKE) all unit
	./tools/test-sanitized valgrind $(BUILD)

demo: deps
	$(MAKE) all
	./tools/demo

clean:
	rm -rf $(BUILD)


# ------------------------------------------------------------------ deb
#
# make deb: build/libnginx-mod-http-llm-router_VERSION_ARCH.deb (the
# module, for the nginx of this machine's nginx-dev) and
# build/llm-router_VERSION_ARCH.deb (the CLI), from packaging/debian and a
# copy of the tree in build/deb/src.  make deb-lint runs lintian on them.

DEB_BUILD := $(BUILD)/deb

.PHONY: deb deb-deps deb-lint

deb-deps:
	@./packaging/build-deps

deb: deb-deps
	rm -rf $(DEB_BUILD) $(BUILD)/*.deb
	mkdir -p $(DEB_BUILD)/src
	tar -cf - --exclude=./build --exclude=./.git \
	    --exclude=./t/sdk/node_modules . | tar -xf - -C $(DEB_BUILD)/src
	cp -a packaging/debian $(DEB_BUILD)/src/debian
	cd $(DEB_BUILD)/src && dpkg-buildpackage -b --no-sign
	@# the -dbgsym packages stay in build/deb
	cp $$(ls $(DEB_BUILD)/*.deb | grep -v -- -dbgsym_) $(BUILD)/

deb-lint: deb
	lintian --fail-on warning --info $(DEB_BUILD)/*.changes
