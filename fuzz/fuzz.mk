# libFuzzer targets of the core, included by the Makefile; see
# docs/fuzzing.md.
#
#   make fuzz           build, then fuzz each target FUZZ_SECONDS (60)
#   make fuzz-regress   build, then run the regressions and the seeds once
#
# Each target fuzzes build/fuzz/corpus-<target>, which keeps what the
# runs found and gets the seeds and regressions anew each time; a crash
# stops make and is left as build/fuzz/<target>-crash-<sha1> (or -leak-,
# -timeout-, -oom-).  FUZZ_FLAGS adds libFuzzer options.  Include it after
# the Makefile's first rule, which stays the default goal.

FUZZ_SECONDS  ?= 60
FUZZ_FLAGS    ?=
FUZZ_TARGETS  := request usage model
FUZZ_OUT      := $(BUILD)/fuzz
FUZZ_RUN      := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz fuzz-build fuzz-regress

# fuzz/build compiles only what changed
fuzz-build:
	@./tools/install-deps clang libclang-rt-14-dev dpkg-dev
	FUZZ_OUT='$(FUZZ_OUT)' CORE_DIR='$(CURDIR)/$(CORE_DIR)' \
	    ./fuzz/build $(FUZZ_TARGETS)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    corpus=$(FUZZ_OUT)/corpus-$$t; \
	    mkdir -p $$corpus; \
	    cp fuzz/corpus/$$t/* $$corpus/; \
	    if [ -n "$$(ls fuzz/regressions/$$t 2>/dev/null)" ]; then \
	        cp fuzz/regressions/$$t/* $$corpus/; \
	    fi; \
	    dict=; \
	    if [ -f fuzz/$$t.dict ]; then dict=-dict=fuzz/$$t.dict; fi; \
	    echo "fuzz-$$t: $(FUZZ_SECONDS) s on $$corpus"; \
	    $(FUZZ_OUT)/fuzz-$$t $(FUZZ_RUN) $$dict \
	        -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=$(FUZZ_OUT)/$$t- $(FUZZ_FLAGS) $$corpus \
	        > $(FUZZ_OUT)/$$t.log 2>&1 \
	    || { tail -40 $(FUZZ_OUT)/$$t.log; \
	         echo "fuzz-$$t failed: see $(FUZZ_OUT)/$$t.log and" \
	              "$(FUZZ_OUT)/$$t-*"; \
	         exit 1; }; \
	    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::' $(FUZZ_OUT)/$$t.log || true; \
	done

# each input once, as individual files: no fuzzing, nothing is written
fuzz-regress: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    files=$$(find fuzz/regressions/$$t fuzz/corpus/$$t -type f \
	             2>/dev/null | sort); \
	    [ -n "$$files" ] || continue; \
	    $(FUZZ_OUT)/fuzz-$$t -artifact_prefix=$(FUZZ_OUT)/$$t- $$files \
	        > $(FUZZ_OUT)/$$t-regress.log 2>&1 \
	    || { tail -40 $(FUZZ_OUT)/$$t-regress.log; \
	         echo "fuzz-regress $$t failed:" \
	              "see $(FUZZ_OUT)/$$t-regress.log"; \
	         exit 1; }; \
	    echo "fuzz-$$t: $$(echo $$files | wc -w) inputs, no failure"; \
	done
