/* db.h - SQLite helpers and the schemas of the three files of a data directory.
 *
 * One writer per file (DESIGN.md section 4): master.db and batch.db are written by
 * lambda-batch, speed.db by lambda-speed; lambda-serve only reads. db_open_rw() sets WAL,
 * synchronous=FULL (another layer acts on every commit, so each is on disk before it returns)
 * and a busy timeout, and applies the file's schema when its stamp (user_version, a hash of the
 * schema text) says it is out of date, all of it in one transaction: a reader finds none or all
 * of it, and an up-to-date file opens without the write lock. Readers use db_open_ro(). The
 * schema text below is the contract between the layers: a column is added here, once, or
 * nowhere.
 *
 * master.db
 *   orders(merchant_id, order_id, amount_cents, event_time_ms, partition, offset, raw)
 *       the master dataset (DESIGN.md section 4): a view, UNION ALL of its two levels, so
 *       that a count or sum over `orders` is the whole set. Primary key (merchant_id,
 *       order_id) in effect: the first copy in log order, once, ever, in one of the levels.
 *       An imported order has partition -1 and offset = its line number. The code asks each
 *       level itself (a full scan through the view is 1.6x slower).
 *   orders_base(...)   the same columns, primary key (merchant_id, order_id): the big level.
 *       An incremental run does not write it (its inserts would dirty pages scattered over
 *       all of history), a full run merges the recent level into it.
 *   orders_recent(...)   the same columns and key: the recent level, the orders taken in
 *       since the last full run (or since the file's first load, which goes into the big
 *       level while that is empty). A key is in at most one level; the duplicate rule asks
 *       both (shared/dedup_master.h). A file from before the view had the table `orders` as
 *       its big level (and no recent level before that): the first writer renames it.
 *   ingest_offsets(partition, next_offset)  written in the same transaction as the rows.
 *   rejects(id, source, partition, offset, line, reason, payload, at_ms)
 *       source 'kafka' (partition, offset) or a file path (line); payload: first 1 KiB.
 *   counters(name, value)     duplicates, key_mismatch, deleted_offsets, rejects_<reason>
 *       (kept by a trigger on rejects: monotonic, whatever retention deletes), ...
 *   imports(file_hash, path, lines, orders, rejects, at_ms)   one row per imported file.
 *   ingests(seq, source, orders, at_ms) and ingest_sums(seq, merchant_id, minute_ms,
 *       order_count, revenue_cents): every transaction that inserts orders (Kafka ingest or
 *       import) records, in that transaction, the sums it added per (merchant, minute) under a
 *       new seq (AUTOINCREMENT: never reused). A version covers seq <= its ingest_seq, so an
 *       incremental run reads only the sums after the previous version's. Orders ingested
 *       before this table existed have no sums: the first run after the upgrade is full.
 *
 * batch.db
 *   versions(id, state, cut_epoch, started_ms, finished_ms, orders, merchants, ingested,
 *            rejects, duplicates, checks, mode, ingest_seq, max_minute_ms, minute_from_ms,
 *            merchants_rewritten, buckets_rewritten, differences, first_difference, phases)
 *       state: 'pending' (the cut binds: a failed run's successor reuses it), 'published',
 *       'failed'. The newest 'published' row is the version serving reads. mode 'full',
 *       'incremental' or 'migrated'; minute_from_ms: the version holds minute rows from there
 *       on (NULL: it does not say), hour rows for all history.
 *   cut_offsets(version, partition, offset)   the cut: master holds offsets < offset.
 *   meta(key, value)   last_full_version, last_full_ms, last_full_differences,
 *                      last_full_first_difference; baseline='unproven' after a migration.
 *   merchant_totals(merchant_id, valid_from, valid_to, order_count, revenue_cents)
 *   hourly(merchant_id, hour_ms, valid_from, valid_to, order_count, revenue_cents)  all history
 *   minutely(merchant_id, minute_ms, valid_from, valid_to, ...)   from minute_from_ms on
 *       A row belongs to every version V with valid_from <= V < valid_to (DB_OPEN: it is still
 *       in the newest); a version writes only the rows it changed, closing the ones they
 *       replace, so batch.db grows per version by what changed.
 *   runs(id, started_ms, finished_ms, ok, version, failed_check, error)   the last runs'
 *       outcomes (a skipped run is not one); failed_check names the first data-quality check
 *       that failed, NULL when something else did (error says what).
 *   run_counters(name, value)   runs, failed_runs, failed_<check> (failed_error for a
 *       failure that was no check's): monotonic, whatever runs keeps.
 *
 * speed.db
 *   deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents, seq)
 *       seq: the number of the checkpoint that last changed the row (counters.checkpoints
 *       once it committed), a change feed; 0 in rows written before it existed.
 *   offsets(partition, next_offset, max_event_ms, high_watermark, updated_ms)
 *   boundaries(epoch, partition, offset): the position at which epoch's first interval began.
 *   seen(seq, merchant_id, order_id, epoch, partition, offset): ids counted since the cut,
 *       an append-only log (epoch never decreases along seq).
 *   seen_gens(gen, lo, hi, level) and seen_fp_<gen>(fp, seq): the fingerprints of ids
 *       spilled from memory when more are live than lambda-speed's dedup_cache holds, a table
 *       per generation; seen_gens lists those written whole (shared/dedup.h).
 *   rejects(id, partition, offset, reason, payload, at_ms)
 *   late(id, partition, offset, merchant_id, order_id, event_ms, minute_ms, watermark_ms,
 *        late_ms, at_ms)
 *   counters(name, value)  consumed, applied, duplicates, late, key_mismatch,
 *                          rejects_<reason>, checkpoints, checkpoint_us (last)
 *   meta(key, value)       checkpoint_ms (wall time of the last commit), epoch, epoch_ms,
 *                          watermark_ms, allowed_lateness_ms, published_cut (the newest
 *                          published cut_epoch the layer has seen: a batch version exists)
 *
 * every file
 *   pins(key, value)       epoch_ms and shard_partitions, recorded by the first writer
 *                          (shared/pin.h)
 */
#ifndef LAMBDA_DB_H
#define LAMBDA_DB_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

enum db_file { DB_MASTER, DB_BATCH, DB_SPEED };

/* valid_to of a row still in the newest version, as a number and as SQL text. */
#define DB_OPEN     INT64_MAX
#define DB_OPEN_SQL "9223372036854775807"

/* "master.db", "batch.db", "speed.db". */
const char *db_file_name(enum db_file f);

/* Writes data_dir/<file> into out (PATH_MAX bytes). */
void db_path(const char *data_dir, enum db_file f, char *out, size_t size);

/* Opens (creating) a file for writing: WAL, synchronous=FULL, busy timeout, schema applied
 * (migrations, tables and stamp in one BEGIN IMMEDIATE transaction, only when the stamp is not
 * this version's; the busy timeout bounds the wait for another writer).
 * A file that does not exist yet appears at its path whole, schema and all, or not at all: it
 * is made as <file>.new-XXXXXX (mkstemp, flocked while it is built) and linked into place, so a
 * reader or a power loss never finds it empty or half made by this. On error returns -1, *out is
 * untouched and nothing stays open. */
int db_open_rw(const char *data_dir, enum db_file f, sqlite3 **out, struct lerr *e);

/* The PRAGMA that sets a writer's synchronous level for file f (db.c says why), for a
 * connection that lowered it for one commit to set it back. */
const char *db_sync_pragma(enum db_file f);

/* Opens an existing file read-only (query_only, busy timeout). -1 when it is missing or
 * unreadable; nothing stays open then. */
int db_open_ro(const char *data_dir, enum db_file f, sqlite3 **out, struct lerr *e);

/* Applies a file's schema (idempotent: it creates what is missing, indexes included). */
int db_schema(sqlite3 *db, enum db_file f, struct lerr *e);

/* Runs SQL without results (several statements allowed). */
int db_exec(sqlite3 *db, const char *sql, struct lerr *e);

/* Prepares one statement; meant to be called once per statement and the result reused. */
int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct lerr *e);

/* Prepares an insert of `rows` rows of `cols` values each in one statement: head (as
 * "INSERT INTO t(a, b) VALUES") then the placeholders. At most DB_ROWS_MAX rows of 8 values. */
#define DB_ROWS_MAX 64
int db_prepare_rows(sqlite3 *db, const char *head, int cols, int rows, sqlite3_stmt **out,
                    struct lerr *e);

/* Runs a statement that returns at most one integer (first column of the first row) and
 * resets it; *out keeps its value when there is no row or it is NULL. */
int db_step_int(sqlite3_stmt *st, int64_t *out, struct lerr *e);

/* Prepares, runs and finalizes a one-off statement returning one integer (as db_step_int). */
int db_query_int(sqlite3 *db, const char *sql, int64_t *out, struct lerr *e);

/* Steps a statement to completion (no rows expected) and resets it. */
int db_step_done(sqlite3_stmt *st, struct lerr *e);

/* Creates the data directory (and parents) if it does not exist. */
int db_ensure_dir(const char *data_dir, struct lerr *e);

#endif
