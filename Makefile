# lambda-stack: one non-recursive Makefile.
#   make            release build: binaries in bin/
#   make SAN=1      AddressSanitizer + UBSan build: binaries in build/san/bin/
#   make test       install missing packages, run every test, then again under the sanitizers
#   make demo       the whole stack on the embedded Kafka (scripts/demo.sh)
#   make bench      the benchmarks of bench/ (not tests: they print figures)
#   make fuzz       every libFuzzer harness of tests/fuzz/ for FUZZ_SECONDS each (clang)
#   make faults     the power-loss test at every sync point (make test runs a sample)
#   make soak       SOAK_MINUTES of load with kill -9s and a broker outage (not in make test)

BUILD  := build/rel
BIN    := bin
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
          -Wmissing-prototypes -MMD -MP -pthread
CPPFLAGS += -I. -Ishared
LDFLAGS += -pthread
LDLIBS := -lrdkafka -ljansson -lmicrohttpd -lsqlite3 -linih -lxxhash -lcsv -lcurl -lm
ifeq ($(SAN),1)
BUILD  := build/san
BIN    := build/san/bin
CFLAGS += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif
# FUZZ=1: clang with libFuzzer's coverage, ASan and UBSan, for make fuzz (build/fuzz).
ifeq ($(FUZZ),1)
CC     := clang
BUILD  := build/fuzz
BIN    := build/fuzz/bin
CFLAGS += -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
          -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
endif

# Every .c that is not a main() goes into one archive; binaries and tests link against it.
MAINS   := batch/main.c speed/main.c serving/main.c scripts/devkafka.c scripts/gen.c
LIBSRC  := $(filter-out $(MAINS),$(wildcard shared/*.c batch/*.c speed/*.c serving/*.c scripts/*.c))
LIBOBJ  := $(LIBSRC:%.c=$(BUILD)/%.o)
LIB     := $(BUILD)/liblambda.a
PROGS   := $(BIN)/lambda-batch $(BIN)/lambda-speed $(BIN)/lambda-serve \
           $(BIN)/lambda-devkafka $(BIN)/lambda-gen
TESTSRC := $(sort $(wildcard tests/test_*.c tests/it_*.c))
TESTS   := $(TESTSRC:tests/%.c=$(BUILD)/tests/%)
TESTLIB := $(filter-out tests/test_%.c tests/it_%.c,$(wildcard tests/*.c))
TESTLIBOBJ := $(TESTLIB:%.c=$(BUILD)/%.o)

.PHONY: all tests check check-rules check-dashboard test deps bench demo fmt fmt-check clean \
        fuzz fuzzers fuzz-replay faults soak
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIBOBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BIN)/lambda-batch: $(BUILD)/batch/main.o $(LIB)
$(BIN)/lambda-speed: $(BUILD)/speed/main.o $(LIB)
$(BIN)/lambda-serve: $(BUILD)/serving/main.o $(LIB)
$(BIN)/lambda-devkafka: $(BUILD)/scripts/devkafka.o $(LIB)
$(BIN)/lambda-gen: $(BUILD)/scripts/gen.o $(LIB)
$(PROGS):
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TESTLIBOBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcriterion

tests: $(PROGS) $(TESTS)

# Each test binary runs on its own; LAMBDA_BIN tells integration tests which binaries to start.
check: tests
	@set -e; for t in $(TESTS); do \
	    echo "== $$t"; \
	    LAMBDA_BIN=$(abspath $(BIN)) ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	        LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
	        $$t --jobs 2 || { echo "FAILED: $$t"; exit 1; }; \
	done

deps:
	@scripts/deps.sh

# The alert rules of scripts/prometheus: valid, and firing on the recorded failures they name.
check-rules:
	promtool check rules scripts/prometheus/lambda.rules.yml
	promtool test rules scripts/prometheus/lambda.rules.test.yml

# serving/dashboard.c is generated from dashboard.html and committed: it must match.
check-dashboard:
	@tmp=$$(mktemp -d) && cp serving/dashboard.html serving/dashboard.sh "$$tmp" && \
	    sh "$$tmp/dashboard.sh" && cmp -s "$$tmp/dashboard.c" serving/dashboard.c || \
	    { echo "serving/dashboard.c is stale: run sh serving/dashboard.sh"; rm -rf "$$tmp"; exit 1; }; \
	    rm -rf "$$tmp"

# Fuzzing: tests/fuzz/fuzz_<name>.c is a harness, tests/fuzz/<name>/ its corpus. Each links
# with replay.c into $(BUILD)/fuzz/replay_<name> (make check runs the corpus once, in both
# builds) and, under FUZZ=1, with libFuzzer into build/fuzz/fuzz/fuzz_<name> (make fuzz). New
# inputs libFuzzer finds go to build/fuzz/corpus/<name>/, crashes to build/fuzz/crash-<name>-*.
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
REPLAYS      := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)
FUZZERS      := $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
FUZZ_SECONDS ?= 60

$(BUILD)/fuzz/replay_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# The power-loss VFS (tests/powerloss/), preloaded by it_powerloss into the real binaries; built
# without the sanitizers (the test runs on the release build only).
$(BUILD)/tests/powerloss_vfs.so: tests/powerloss/vfs.c tests/powerloss/powerloss.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(filter-out -fsanitize%,$(CFLAGS)) -fPIC -shared -o $@ $< -ldl -lsqlite3
$(BUILD)/tests/it_powerloss: | $(BUILD)/tests/powerloss_vfs.so

# make faults: every sync point of the scripted run, in both modes (make test runs a sample).
faults: deps all $(BUILD)/tests/it_powerloss
	POWERLOSS_ALL=1 LAMBDA_BIN=$(abspath $(BIN)) $(BUILD)/tests/it_powerloss --jobs 1 --verbose

# make soak: SOAK_MINUTES (default 10) of load with 20 kill -9s and a broker outage.
soak: deps all $(BUILD)/tests/soak/it_soak
	LAMBDA_BIN=$(abspath $(BIN)) $(BUILD)/tests/soak/it_soak --jobs 1

fuzz-replay: $(REPLAYS)
	@set -e; for h in $(FUZZ_NAMES); do \
	    ASAN_OPTIONS=detect_leaks=1 $(BUILD)/fuzz/replay_$$h tests/fuzz/$$h; done
check: fuzz-replay

fuzzers: $(FUZZERS)

fuzz: deps
	$(MAKE) FUZZ=1 fuzzers
	@set -e; for h in $(FUZZ_NAMES); do \
	    mkdir -p build/fuzz/corpus/$$h; \
	    build/fuzz/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash-$$h- build/fuzz/corpus/$$h tests/fuzz/$$h \
	        >build/fuzz/$$h.log 2>&1 || { tail -40 build/fuzz/$$h.log; \
	        echo "FAILED: fuzz_$$h (build/fuzz/$$h.log)"; exit 1; }; \
	    echo "fuzz $$h: executions=$$(sed -n 's/^stat::number_of_executed_units: *//p' \
	        build/fuzz/$$h.log) crashes=0 seconds=$(FUZZ_SECONDS)"; \
	done

test: deps
	$(MAKE) check-rules check-dashboard
	$(MAKE) check
	$(MAKE) check SAN=1

bench: deps all
	@bench/run.sh

demo: deps all
	@scripts/demo.sh

FMTSRC = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build/*')
fmt:
	clang-format -i $(FMTSRC)
fmt-check:
	clang-format --dry-run --Werror $(FMTSRC)

clean:
	rm -rf build bin

.SECONDARY:
-include $(shell find build -name '*.d' 2>/dev/null)
