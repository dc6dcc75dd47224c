/* dedup_marks.h - marks_: where each epoch's ids begin in shared/dedup.c's sequence.
 *
 * Ids are numbered in the order they are counted and epochs never decrease along the
 * numbers, so an epoch's ids are one run: a mark per epoch (its first number) lets expiry
 * turn "epoch < cut" into "number < first", a prefix. A caller may rely on: marks are in
 * increasing order of both epoch and number (marks_note asserts it). */
#ifndef LAMBDA_DEDUP_MARKS_H
#define LAMBDA_DEDUP_MARKS_H

#include <stddef.h>
#include <stdint.h>

struct mark {
    int64_t epoch, first_seq;
};

struct marks {
    struct mark *v; /* oldest epoch first */
    size_t n, cap;
};

/* Notes that id number seq has this epoch: a new mark when the epoch is newer than the last
 * one's (or there is none). 0, or -1 when memory is short (nothing changed). */
int marks_note(struct marks *m, int64_t epoch, int64_t seq);

/* The first number of an epoch >= cut_epoch, or none when no mark has one. */
int64_t marks_first_at(const struct marks *m, int64_t cut_epoch, int64_t none);

/* Forgets the marks of epochs < cut_epoch. */
void marks_drop_before(struct marks *m, int64_t cut_epoch);

void marks_free(struct marks *m);

#endif
