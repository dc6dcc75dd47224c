/* fuzz.h - what every harness of tests/fuzz/ defines: libFuzzer's entry points.
 *
 * Each fuzz_<name>.c is linked twice: with clang's libFuzzer (make fuzz, build/fuzz/) to search
 * for crashes, and with replay.c (make test, both builds) to run its committed corpus,
 * tests/fuzz/<name>/, once per file. A harness aborts on any answer that breaks the contract it
 * checks, so a crash and a wrong answer are both findings. */
#ifndef LAMBDA_FUZZ_H
#define LAMBDA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with a message naming the broken rule when cond is false (kept in release builds). */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: %s:%d: %s: ", __FILE__, __LINE__, #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
