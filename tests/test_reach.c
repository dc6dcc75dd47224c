/* test_reach.c - knowing where a partition's reader stands when offsets have gaps
 * (shared/kafka.h kafka_reach): transaction markers, aborted data hidden by read_committed and
 * compaction leave offsets no consumer sees, so reaching a cut must never wait for cut - 1. */
#include <criterion/criterion.h>

#include "kafka.h"

/* Feeds deliveries to a reader of [next, cut) as ingest and the speed loop do. */
struct reader {
    int64_t next, cut, lost, taken;
    bool done;
};

static void give(struct reader *r, enum kafka_seen what, int64_t offset, int64_t log_start)
{
    struct kafka_reach k = kafka_reach(r->next, r->cut, what, offset, log_start);

    cr_assert_geq(k.next, r->next, "the position went back");
    cr_assert_leq(k.next, r->cut, "the position passed the cut");
    r->next = k.next;
    r->lost += k.lost;
    r->taken += k.take;
    r->done = k.done;
}

Test(reach, a_transaction_marker_just_below_the_cut_ends_at_the_partition_end)
{
    /* Committed transactions: data 0..2, marker 3, data 4..5, marker 6; the cut is the last
     * stable offset, 7. The last message is 5: offset 6 is never delivered. */
    struct reader r = {.next = 0, .cut = 7};
    int64_t data[] = {0, 1, 2, 4, 5};

    for (int i = 0; i < 5; i++) {
        give(&r, KAFKA_SEEN_MESSAGE, data[i], 0);
        cr_assert_not(r.done, "done after offset %lld", (long long)data[i]);
    }
    cr_assert_eq(r.next, 6);
    give(&r, KAFKA_SEEN_END, 7, 0); /* EOF at the last stable offset */
    cr_assert(r.done);
    cr_assert_eq(r.next, 7);
    cr_assert_eq(r.taken, 5);
    cr_assert_eq(r.lost, 0, "a marker is a gap, not a loss");
}

Test(reach, a_message_past_the_cut_ends_without_taking_it)
{
    /* An aborted transaction fills 10..19 (hidden), the cut is 20, a later message is 25. */
    struct reader r = {.next = 8, .cut = 20};

    give(&r, KAFKA_SEEN_MESSAGE, 8, 0);
    give(&r, KAFKA_SEEN_MESSAGE, 9, 0);
    cr_assert_not(r.done);
    give(&r, KAFKA_SEEN_MESSAGE, 25, 0);
    cr_assert(r.done);
    cr_assert_eq(r.next, 20, "offsets from the cut on belong to the next version");
    cr_assert_eq(r.taken, 2);
    cr_assert_eq(r.lost, 0);
}

Test(reach, the_position_alone_can_say_a_reader_is_through)
{
    struct reader r = {.next = 0, .cut = 5};

    give(&r, KAFKA_SEEN_MESSAGE, 0, 0);
    give(&r, KAFKA_SEEN_END, 3, 0); /* the consumer stands at 3: 1 and 2 hold nothing */
    cr_assert_eq(r.next, 3);
    cr_assert_not(r.done);
    give(&r, KAFKA_SEEN_END, 9, 0);
    cr_assert(r.done);
    cr_assert_eq(r.next, 5);
    /* A late, stale position or a message already read changes nothing. */
    give(&r, KAFKA_SEEN_END, 2, 0);
    give(&r, KAFKA_SEEN_MESSAGE, 4, 0);
    cr_assert_eq(r.next, 5);
    cr_assert_eq(r.taken, 1);
}

Test(reach, only_the_part_of_a_jump_below_the_log_start_is_lost)
{
    /* The speed loop (no cut): retention deleted up to 100; 100..104 were aborted data. */
    struct reader r = {.next = 40, .cut = KAFKA_NO_CUT};

    give(&r, KAFKA_SEEN_MESSAGE, 105, 100);
    cr_assert_eq(r.lost, 60);
    cr_assert_eq(r.next, 106);
    cr_assert_eq(r.taken, 1);
    /* A gap above the log start: nothing lost. */
    give(&r, KAFKA_SEEN_MESSAGE, 110, 100);
    cr_assert_eq(r.lost, 60);
    /* The log start unknown: a jump is counted as lost, the cautious reading. */
    give(&r, KAFKA_SEEN_MESSAGE, 115, -1);
    cr_assert_eq(r.lost, 64);
    cr_assert_not(r.done, "a reader without a cut never ends");
}

Test(reach, with_gaps_everywhere_every_visible_message_below_the_cut_is_taken_once)
{
    /* Every third offset is a marker; the reader is given each message twice (a redelivery
     * after a reconnect), then the end. */
    struct reader r = {.next = 0, .cut = 300};
    int64_t want = 0;

    for (int64_t o = 0; o < 400; o++) {
        if (o % 3 == 2)
            continue;
        give(&r, KAFKA_SEEN_MESSAGE, o, 0);
        give(&r, KAFKA_SEEN_MESSAGE, o, 0);
        if (o < 300)
            want++;
    }
    cr_assert(r.done);
    cr_assert_eq(r.taken, want);
    cr_assert_eq(r.next, 300);
    cr_assert_eq(r.lost, 0);
}
