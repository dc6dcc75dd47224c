/* dim.h - the merchant dimension: a side input joined at query time (DESIGN.md section 5).
 *
 * A dimension file maps merchant ids to attributes (name, category, country...):
 *   - CSV (.csv): a header whose first column is merchant_id, the other columns attributes;
 *     fields are read by shared/csvrec (quotes, commas and doubled quotes inside quotes); an
 *     empty field means the attribute is absent;
 *   - NDJSON (.ndjson, .jsonl): one object per line with a string merchant_id; string, number
 *     and boolean attributes (null means absent); blank lines are skipped.
 * A file names at least one merchant and none twice, every id valid by the event contract, or
 * it does not load. A loaded version is immutable: workers read it with no lock, through a
 * reference they pin with dim_acquire(). Its version is a hash of the file's content, so two
 * lambda-serve instances (shards) that load the same file report the same version.
 *
 * struct dim_source owns the current version and a thread that checks the file every
 * refresh_ms: when its modification time, size or inode changed it loads the new content and
 * swaps it in atomically; a file that fails to load keeps the previous version serving, logged
 * (dimension_load_failed file=.. line=.. err=..) and counted. lambda-serve's main.c creates
 * the source; api.c reads it. Because the join happens when an answer is built, a changed
 * attribute applies to all history at once (a type-1 dimension). */
#ifndef LAMBDA_SERVE_DIM_H
#define LAMBDA_SERVE_DIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lerr.h"

struct dim;

/* Loads path (format by extension). NULL with e naming the file, the line and the reason.
 * The caller holds the one reference: dim_release(NULL, d) frees it. */
struct dim *dim_load(const char *path, struct lerr *e);

/* The attributes of merchant_id as an object, or NULL when the file does not name it. Borrowed:
 * valid while the caller holds d; never modify it (json_deep_copy() to put it in an answer). */
const json_t *dim_attrs(const struct dim *d, const char *merchant_id);

/* The text of an attribute for matching and grouping: a string as it is, a number or a boolean
 * as JSON writes it. NULL when the merchant or the attribute is absent. Borrowed as above. */
const char *dim_attr_text(const struct dim *d, const char *merchant_id, const char *attr);

/* The version (a 53-bit hash of the content: exact in a JavaScript number), when it was loaded
 * (epoch ms) and how many merchants it names. */
int64_t dim_version(const struct dim *d);
int64_t dim_loaded_ms(const struct dim *d);
size_t dim_merchants(const struct dim *d);

struct dim_source;

struct dim_stats {
    int64_t version, loaded_ms; /* of the version serving */
    size_t merchants;
    int64_t loads, failed_loads; /* since start; the first load included */
};

/* Loads path now and starts checking it every refresh_ms. NULL with e set when the first load
 * fails (lambda-serve then exits 2 naming the file and line) or a thread cannot start. */
struct dim_source *dim_source_new(const char *path, int64_t refresh_ms, struct lerr *e);
/* Stops the refresh thread and frees the source once no reader holds a version. NULL: no-op. */
void dim_source_free(struct dim_source *s);

/* The version serving now, pinned until dim_release(). Never NULL for a source. */
struct dim *dim_acquire(struct dim_source *s);
void dim_release(struct dim_source *s, struct dim *d);

/* Checks the file now, as the refresh thread does: 1 a new version serves, 0 the file did not
 * change, -1 it changed and failed to load (e says why; the previous version still serves). */
int dim_source_check(struct dim_source *s, struct lerr *e);

void dim_source_stats(struct dim_source *s, struct dim_stats *out);

#endif
