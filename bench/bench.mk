# bench/bench.mk - the HTTP benchmark, included by the Makefile.
#
#   make bench-http     plain nginx, the module (rules; classifier) and,
#                       when npm is there, the Portkey gateway, side by
#                       side with wrk on loopback (bench/http); installs
#                       wrk with apt-get when it is missing
#
# BENCH_SECONDS, BENCH_SIZES, BENCH_ROWS... shorten or narrow the run
# (see bench/http).  The results go to build/bench/results.{txt,md,json}.

BENCH_BUILD := $(CURDIR)/build
BENCH_SHIM  := $(BENCH_BUILD)/bench-malloc.so

.PHONY: bench-http bench-deps

# counts the bytes malloc'd per request, preloaded into the proxy
$(BENCH_SHIM): bench/malloc-count.c
	mkdir -p $(BENCH_BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ bench/malloc-count.c

bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "installing: wrk"; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk \
	    || { $$SUDO apt-get update -q \
	         && DEBIAN_FRONTEND=noninteractive \
	            $$SUDO apt-get install -y -q wrk; }; }

bench-http: bench-deps $(BENCH_SHIM)
	$(MAKE) all
	./bench/http
