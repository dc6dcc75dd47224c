# lambda-stack: one non-recursive Makefile.
#   make            release build: binaries in bin/
#   make SAN=1      AddressSanitizer + UBSan build: binaries in build/san/bin/
#   make test       install missing packages, run every test, then again under the sanitizers
#   make demo       the whole stack on the embedded Kafka (scripts/demo.sh)
#   make bench      the benchmarks of bench/ (not tests: they print figures)

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

.PHONY: all tests check check-rules check-dashboard test deps bench demo fmt fmt-check clean
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
