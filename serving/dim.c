/* dim.c - the merchant dimension: loading a file, and the source that swaps versions (dim.h). */
#include "dim.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <uthash.h>
#include <xxhash.h>

#include "csvrec.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

struct dim_entry {
    char id[EV_ID_MAX + 1];
    json_t *attrs; /* as the file gives them */
    json_t *texts; /* the same attributes as strings; attrs itself when all are strings */
    UT_hash_handle hh;
};

struct dim {
    struct dim_entry *by_id; /* uthash head */
    struct dim_entry *entries;
    size_t n, cap;
    int64_t version, loaded_ms;
    atomic_long refs; /* the source's own reference and every reader's */
};

static void dim_free(struct dim *d)
{
    if (!d)
        return;
    HASH_CLEAR(hh, d->by_id);
    for (size_t i = 0; i < d->n; i++) {
        if (d->entries[i].texts != d->entries[i].attrs)
            json_decref(d->entries[i].texts);
        json_decref(d->entries[i].attrs);
    }
    free(d->entries);
    free(d);
}

/* Adds a merchant; takes attrs and texts (a NULL texts means attrs). -1 with e on a bad id, a
 * duplicate or no memory. Entries are indexed only once all are read (the array moves). */
static int add_entry(struct dim *d, const char *id, json_t *attrs, json_t *texts, struct lerr *e)
{
    if (!ev_merchant_id_valid(id, strlen(id))) {
        lerr_set(e, "merchant_id '%.80s' is not a valid merchant id", id);
        goto fail;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        struct dim_entry *p = realloc(d->entries, cap * sizeof(*p));
        if (!p) {
            lerr_set(e, "out of memory");
            goto fail;
        }
        d->entries = p;
        d->cap = cap;
    }
    struct dim_entry *x = &d->entries[d->n++];
    memset(x, 0, sizeof(*x));
    snprintf(x->id, sizeof(x->id), "%s", id);
    x->attrs = attrs;
    x->texts = texts ? texts : attrs;
    return 0;
fail:
    if (texts != attrs)
        json_decref(texts);
    json_decref(attrs);
    return -1;
}

/* Indexes every entry; the first duplicate id is an error naming it and its line. */
static int index_entries(struct dim *d, const int64_t *lines, struct lerr *e)
{
    for (size_t i = 0; i < d->n; i++) {
        struct dim_entry *x = &d->entries[i], *old;
        HASH_FIND_STR(d->by_id, x->id, old);
        if (old)
            return lerr_set(e, "line %lld: merchant '%s' named twice (first on line %lld)",
                            (long long)lines[i], x->id, (long long)lines[old - d->entries]);
        HASH_ADD_STR(d->by_id, id, x);
    }
    return 0;
}

/* A line of the file: [s, s + len), without its line end. */
struct line {
    const char *s;
    size_t len;
    int64_t no;
};

static bool next_line(const char **p, const char *end, struct line *l)
{
    if (*p >= end)
        return false;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    l->s = *p;
    l->len = (size_t)((nl ? nl : end) - *p);
    if (l->len > 0 && l->s[l->len - 1] == '\r')
        l->len--;
    l->no++;
    *p = nl ? nl + 1 : end;
    return true;
}

static int load_csv(struct dim *d, const char *data, size_t size, int64_t **lines, struct lerr *e)
{
    struct csvrec r;
    struct line l = {0};
    const char *p = data, *end = data + size;
    json_t *names = json_array();
    size_t lines_cap = 0;
    int ncols = 0, rc = -1;
    struct lerr why;

    if (csvrec_init(&r, e) != 0 || !names)
        goto out;
    if (size >= 3 && !memcmp(p, "\xef\xbb\xbf", 3))
        p += 3; /* a UTF-8 byte order mark */
    if (!next_line(&p, end, &l) || (ncols = csvrec_split(&r, l.s, l.len, &why)) < 0) {
        lerr_set(e, "line 1: %s", ncols < 0 ? why.msg : "no header");
        goto out;
    }
    if (strcmp(csvrec_field(&r, 0), "merchant_id") != 0) {
        lerr_set(e, "line 1: the header's first column must be merchant_id");
        goto out;
    }
    for (int i = 1; i < ncols; i++) {
        const char *name = csvrec_field(&r, i);
        json_t *js = json_string(name);
        bool is_dup = false;
        for (size_t k = 0; k < json_array_size(names) && !is_dup; k++)
            is_dup = !strcmp(json_string_value(json_array_get(names, k)), name);
        if (!*name || !js || is_dup || !strcmp(name, "merchant_id")) {
            json_decref(js);
            lerr_set(e, "line 1: column %d: %s", i + 1,
                     !*name ? "an empty name"
                     : !js  ? "not UTF-8"
                            : "a name given twice");
            goto out;
        }
        json_array_append_new(names, js);
    }
    while (next_line(&p, end, &l)) {
        int n = csvrec_split(&r, l.s, l.len, &why);
        if (n == 1 && l.len == 0)
            continue; /* a blank line */
        if (n < 0) {
            lerr_set(e, "line %lld: %s", (long long)l.no, why.msg);
            goto out;
        }
        if (n != ncols) {
            lerr_set(e, "line %lld: %d fields, the header has %d", (long long)l.no, n, ncols);
            goto out;
        }
        json_t *attrs = json_object();
        for (int i = 1; i < n && attrs; i++) {
            const char *v = csvrec_field(&r, i);
            json_t *js = *v ? json_string(v) : NULL;
            if (*v && !js) {
                lerr_set(e, "line %lld: field %d is not UTF-8", (long long)l.no, i + 1);
                json_decref(attrs);
                goto out;
            }
            if (js)
                json_object_set_new(attrs, json_string_value(json_array_get(names, (size_t)i - 1)),
                                    js);
        }
        if (!attrs) {
            lerr_set(e, "out of memory");
            goto out;
        }
        if (d->n == lines_cap) {
            lines_cap = lines_cap ? lines_cap * 2 : 256;
            int64_t *q = realloc(*lines, lines_cap * sizeof(*q));
            if (!q) {
                json_decref(attrs);
                lerr_set(e, "out of memory");
                goto out;
            }
            *lines = q;
        }
        (*lines)[d->n] = l.no;
        if (add_entry(d, csvrec_field(&r, 0), attrs, NULL, &why) != 0) {
            lerr_set(e, "line %lld: %s", (long long)l.no, why.msg);
            goto out;
        }
    }
    rc = 0;
out:
    csvrec_release(&r);
    json_decref(names);
    return rc;
}

/* The attributes of one NDJSON object as strings, for matching: NULL when all are strings. */
static json_t *texts_of(json_t *attrs)
{
    const char *k;
    json_t *v, *texts = NULL;

    json_object_foreach(attrs, k, v)
    {
        if (!json_is_string(v)) {
            texts = json_object();
            break;
        }
    }
    if (!texts)
        return NULL;
    json_object_foreach(attrs, k, v)
    {
        char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        json_object_set_new(texts, k, s ? json_string(s) : json_copy(v));
        free(s);
    }
    return texts;
}

static int load_ndjson(struct dim *d, const char *data, size_t size, int64_t **lines,
                       struct lerr *e)
{
    struct line l = {0};
    const char *p = data;
    size_t lines_cap = 0;
    struct lerr why;

    while (next_line(&p, data + size, &l)) {
        json_error_t jerr;
        json_t *obj, *id, *attrs;
        const char *k;
        json_t *v;

        if (l.len == 0)
            continue;
        obj = json_loadb(l.s, l.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj || !json_is_object(obj)) {
            lerr_set(e, "line %lld: %s", (long long)l.no, obj ? "not an object" : jerr.text);
            json_decref(obj);
            return -1;
        }
        id = json_object_get(obj, "merchant_id");
        if (!json_is_string(id)) {
            json_decref(obj);
            return lerr_set(e, "line %lld: no string merchant_id", (long long)l.no);
        }
        attrs = json_object();
        json_object_foreach(obj, k, v)
        {
            if (!strcmp(k, "merchant_id") || json_is_null(v))
                continue;
            if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v)) {
                lerr_set(e, "line %lld: attribute '%.64s' is not a string, number or boolean",
                         (long long)l.no, k);
                json_decref(attrs);
                json_decref(obj); /* k is its key: only after the message holds a copy */
                return -1;
            }
            json_object_set(attrs, k, v);
        }
        if (d->n == lines_cap) {
            lines_cap = lines_cap ? lines_cap * 2 : 256;
            int64_t *q = realloc(*lines, lines_cap * sizeof(*q));
            if (!q) {
                json_decref(attrs);
                json_decref(obj);
                return lerr_set(e, "out of memory");
            }
            *lines = q;
        }
        (*lines)[d->n] = l.no;
        int rc = add_entry(d, json_string_value(id), attrs, texts_of(attrs), &why);
        json_decref(obj);
        if (rc != 0)
            return lerr_set(e, "line %lld: %s", (long long)l.no, why.msg);
    }
    return 0;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && !strcmp(s + n - t, tail);
}

/* Reads the whole file; NULL with e set. */
static char *read_all(const char *path, size_t *size, struct lerr *e)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f) {
        lerr_set(e, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        lerr_set(e, "cannot read '%s': %s", path, errno ? strerror(errno) : "short read");
        free(buf);
        buf = NULL;
    } else {
        *size = (size_t)n;
    }
    fclose(f);
    return buf;
}

struct dim *dim_load(const char *path, struct lerr *e)
{
    bool is_csv = ends_with(path, ".csv");
    size_t size = 0;
    int64_t *lines = NULL;
    char *data = NULL;
    struct dim *d = NULL;
    struct lerr why;

    if (!is_csv && !ends_with(path, ".ndjson") && !ends_with(path, ".jsonl")) {
        lerr_set(e, "dimension file '%s': the name must end in .csv, .ndjson or .jsonl", path);
        return NULL;
    }
    if (!(data = read_all(path, &size, e)))
        return NULL;
    if (!(d = calloc(1, sizeof(*d)))) {
        lerr_set(e, "out of memory");
        goto fail;
    }
    if ((is_csv ? load_csv(d, data, size, &lines, &why)
                : load_ndjson(d, data, size, &lines, &why)) != 0 ||
        index_entries(d, lines, &why) != 0) {
        lerr_set(e, "dimension file '%s' %s", path, why.msg);
        goto fail;
    }
    if (d->n == 0) {
        lerr_set(e, "dimension file '%s' names no merchant", path);
        goto fail;
    }
    d->version = (int64_t)(XXH3_64bits(data, size) >> 11);
    d->loaded_ms = tm_now_ms();
    atomic_init(&d->refs, 1);
    free(lines);
    free(data);
    return d;
fail:
    dim_free(d);
    free(lines);
    free(data);
    return NULL;
}

const json_t *dim_attrs(const struct dim *d, const char *merchant_id)
{
    struct dim_entry *x;
    HASH_FIND_STR(d->by_id, merchant_id, x);
    return x ? x->attrs : NULL;
}

const char *dim_attr_text(const struct dim *d, const char *merchant_id, const char *attr)
{
    struct dim_entry *x;
    HASH_FIND_STR(d->by_id, merchant_id, x);
    return x ? json_string_value(json_object_get(x->texts, attr)) : NULL;
}

int64_t dim_version(const struct dim *d)
{
    return d->version;
}

int64_t dim_loaded_ms(const struct dim *d)
{
    return d->loaded_ms;
}

size_t dim_merchants(const struct dim *d)
{
    return d->n;
}

/* ---- the source: one version serving, swapped when the file changes ---- */

struct dim_source {
    char *path;
    int64_t refresh_ms;
    pthread_mutex_t mu; /* guards cur, the identity and the figures */
    pthread_cond_t wake;
    bool is_stopping, has_thread;
    pthread_t thread;
    struct dim *cur;
    struct stat seen; /* the identity of the file cur was loaded from */
    int64_t loads, failed_loads;
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void release(struct dim *d)
{
    if (d && atomic_fetch_sub(&d->refs, 1) == 1)
        dim_free(d);
}

int dim_source_check(struct dim_source *s, struct lerr *e)
{
    struct stat st;
    struct dim *d, *old;

    if (stat(s->path, &st) != 0) {
        pthread_mutex_lock(&s->mu);
        bool was_there = s->seen.st_ino != 0;
        memset(&s->seen, 0, sizeof(s->seen)); /* a file put back counts as changed */
        s->failed_loads += was_there;
        pthread_mutex_unlock(&s->mu);
        if (!was_there)
            return 0; /* already said */
        return lerr_set(e, "cannot stat '%s': %s", s->path, strerror(errno));
    }
    pthread_mutex_lock(&s->mu);
    bool is_same = same_file(&st, &s->seen);
    pthread_mutex_unlock(&s->mu);
    if (is_same)
        return 0;
    d = dim_load(s->path, e);
    pthread_mutex_lock(&s->mu);
    s->seen = st; /* a bad file is tried again only once it changes */
    if (!d) {
        s->failed_loads++;
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    old = s->cur;
    s->cur = d;
    s->loads++;
    pthread_mutex_unlock(&s->mu);
    release(old);
    return 1;
}

static void *refresh_main(void *arg)
{
    struct dim_source *s = arg;

    pthread_mutex_lock(&s->mu);
    while (!s->is_stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += s->refresh_ms / 1000;
        until.tv_nsec += (s->refresh_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->wake, &s->mu, &until);
        if (s->is_stopping)
            break;
        pthread_mutex_unlock(&s->mu);
        struct lerr e = {{0}};
        struct dim_stats now;
        int rc = dim_source_check(s, &e);
        dim_source_stats(s, &now);
        if (rc < 0)
            log_error("serve", "dimension_load_failed err=\"%s\" keeps_version=%lld", e.msg,
                      (long long)now.version);
        else if (rc > 0)
            log_info("serve", "dimension_loaded file=\"%s\" version=%lld merchants=%zu", s->path,
                     (long long)now.version, now.merchants);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct dim_source *dim_source_new(const char *path, int64_t refresh_ms, struct lerr *e)
{
    struct dim_source *s = calloc(1, sizeof(*s));

    if (!s || !(s->path = strdup(path))) {
        free(s);
        lerr_set(e, "out of memory");
        return NULL;
    }
    s->refresh_ms = refresh_ms > 0 ? refresh_ms : 10000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    if (stat(path, &s->seen) != 0) {
        lerr_set(e, "cannot open dimension file '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (!(s->cur = dim_load(path, e)))
        goto fail;
    s->loads = 1;
    if (pthread_create(&s->thread, NULL, refresh_main, s) != 0) {
        lerr_set(e, "cannot start the dimension refresh thread");
        goto fail;
    }
    s->has_thread = true;
    return s;
fail:
    dim_source_free(s);
    return NULL;
}

void dim_source_free(struct dim_source *s)
{
    if (!s)
        return;
    if (s->has_thread) {
        pthread_mutex_lock(&s->mu);
        s->is_stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    release(s->cur);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

struct dim *dim_acquire(struct dim_source *s)
{
    pthread_mutex_lock(&s->mu);
    struct dim *d = s->cur;
    atomic_fetch_add(&d->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return d;
}

void dim_release(struct dim_source *s, struct dim *d)
{
    (void)s;
    release(d);
}

void dim_source_stats(struct dim_source *s, struct dim_stats *out)
{
    pthread_mutex_lock(&s->mu);
    out->version = s->cur->version;
    out->loaded_ms = s->cur->loaded_ms;
    out->merchants = s->cur->n;
    out->loads = s->loads;
    out->failed_loads = s->failed_loads;
    pthread_mutex_unlock(&s->mu);
}
