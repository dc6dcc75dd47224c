/* test_dim.c - the merchant dimension (serving/dim): formats, errors naming the line, versions,
 * and a source that swaps in a changed file and keeps the previous version on a broken one. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csvrec.h"
#include "lerr.h"
#include "serving/dim.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lambda-test-dim-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert(system(cmd) == 0);
}

static const char *put(const char *name, const char *text, size_t len)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert(fwrite(text, 1, len, f) == len);
    fclose(f);
    return path;
}

#define PUT(name, lit) put(name, lit, sizeof(lit) - 1)

static const char merchants_csv[] = "merchant_id,name,category,country\n"
                                    "m-1,\"Books, Ltd.\",books,FR\n"
                                    "m-2,\"The \"\"Good\"\" Shop\",toys,DE\r\n"
                                    "m-3,Café Ünïcode,food,\n"
                                    "\n"
                                    "m-4,,books,FR\n";

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
}

Test(dim, csv_with_quotes_commas_utf8_and_absent_fields, .init = setup, .fini = teardown)
{
    struct lerr e = {{0}};
    struct dim *d = dim_load(PUT("m.csv", merchants_csv), &e);
    cr_assert(d, "%s", e.msg);
    cr_assert_eq(dim_merchants(d), 4);
    char *s = dump(dim_attrs(d, "m-1"));
    cr_assert_str_eq(s, "{\"category\":\"books\",\"country\":\"FR\",\"name\":\"Books, Ltd.\"}");
    free(s);
    s = dump(dim_attrs(d, "m-2"));
    cr_assert_str_eq(
        s, "{\"category\":\"toys\",\"country\":\"DE\",\"name\":\"The \\\"Good\\\" Shop\"}");
    free(s);
    s = dump(dim_attrs(d, "m-3"));
    cr_assert_str_eq(s, "{\"category\":\"food\",\"name\":\"Café Ünïcode\"}");
    free(s);
    cr_assert_null(dim_attr_text(d, "m-4", "name"));
    cr_assert_str_eq(dim_attr_text(d, "m-4", "category"), "books");
    cr_assert_null(dim_attrs(d, "m-9"));
    cr_assert_null(dim_attr_text(d, "m-9", "category"));
    struct dim_source *src = dim_source_new(PUT("m.csv", merchants_csv), 60000, &e);
    cr_assert(src, "%s", e.msg);
    struct dim *same = dim_acquire(src);
    cr_assert_eq(dim_version(same), dim_version(d), "the version is a hash of the content");
    cr_assert(dim_version(d) > 0 && dim_version(d) < (INT64_C(1) << 53));
    dim_release(src, same);
    dim_source_free(src);
    struct dim_source *s2 = dim_source_new(PUT("n.csv", "merchant_id,name\nm-1,x\n"), 60000, &e);
    struct dim *other = dim_acquire(s2);
    cr_assert_neq(dim_version(other), dim_version(d));
    dim_release(s2, other);
    dim_source_free(s2);
    dim_release(NULL, d);
}

Test(dim, ndjson_keeps_types_and_matches_them_as_text, .init = setup, .fini = teardown)
{
    struct lerr e = {{0}};
    struct dim *d = dim_load(PUT("m.ndjson", "{\"merchant_id\":\"m-1\",\"name\":\"A\",\"tier\":2,"
                                             "\"vip\":true,\"gone\":null}\n\n"
                                             "{\"merchant_id\":\"m-2\",\"name\":\"B\"}\n"),
                             &e);
    cr_assert(d, "%s", e.msg);
    char *s = dump(dim_attrs(d, "m-1"));
    cr_assert_str_eq(s, "{\"name\":\"A\",\"tier\":2,\"vip\":true}");
    free(s);
    cr_assert_str_eq(dim_attr_text(d, "m-1", "tier"), "2");
    cr_assert_str_eq(dim_attr_text(d, "m-1", "vip"), "true");
    cr_assert_str_eq(dim_attr_text(d, "m-2", "name"), "B");
    cr_assert_null(dim_attr_text(d, "m-1", "gone"));
    dim_release(NULL, d);
}

static void refused(const char *name, const char *text, size_t len, const char *why)
{
    struct lerr e = {{0}};
    cr_assert_null(dim_load(put(name, text, len), &e), "%s loaded", name);
    cr_assert(strstr(e.msg, why) && strstr(e.msg, name), "%s: '%s' lacks '%s'", name, e.msg, why);
}

#define REFUSED(name, lit, why) refused(name, lit, sizeof(lit) - 1, why)

Test(dim, a_broken_file_is_refused_naming_the_line_and_reason, .init = setup, .fini = teardown)
{
    REFUSED("q.csv", "merchant_id,name\nm-1,ok\nm-2,\"open\n", "line 3: bad quoting");
    REFUSED("q2.csv", "merchant_id,name\nm-1,a\"b\n", "line 2: bad quoting");
    REFUSED("dup.csv", "merchant_id,name\nm-1,a\nm-2,b\nm-1,c\n",
            "line 4: merchant 'm-1' named twice (first on line 2)");
    REFUSED("w.csv", "merchant_id,name\nm-1,a,b\n", "line 2: 3 fields, the header has 2");
    REFUSED("h.csv", "id,name\nm-1,a\n", "line 1: the header's first column must be merchant_id");
    REFUSED("e.csv", "merchant_id,name\n", "names no merchant");
    REFUSED("id.csv", "merchant_id,name\nm 1,a\n", "line 2: merchant_id 'm 1' is not a valid");
    REFUSED("bin.csv", "merchant_id,name\nm-1,\xff\xfe\x01\n", "line 2: field 2 is not UTF-8");
    REFUSED("bin.ndjson",
            "\x7f"
            "ELF\x02\x01\x01\0\0\0",
            "line 1:");
    REFUSED("o.ndjson", "{\"merchant_id\":\"m-1\"}\n[1]\n", "line 2: not an object");
    REFUSED("n.ndjson", "{\"merchant_id\":\"m-1\",\"x\":{\"y\":1}}\n",
            "line 1: attribute 'x' is not a string, number or boolean");
    REFUSED("k.ndjson", "{\"name\":\"x\"}\n", "line 1: no string merchant_id");
    REFUSED("d.ndjson", "{\"merchant_id\":\"m-1\"}\n{\"merchant_id\":\"m-1\"}\n",
            "line 2: merchant 'm-1' named twice (first on line 1)");
    REFUSED("x.txt", "merchant_id\nm-1\n", "must end in .csv, .ndjson or .jsonl");
    struct lerr e = {{0}};
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none.csv", dir);
    cr_assert_null(dim_source_new(missing, 1000, &e));
    cr_assert(strstr(e.msg, "none.csv") && strstr(e.msg, "No such file"), "%s", e.msg);
}

/* Writes through a new file renamed over the old one, as an operator's deploy would. */
static void replace(const char *name, const char *text)
{
    char tmp[600], path[512];
    snprintf(tmp, sizeof(tmp), "%s/.%s.new", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(tmp, "wb");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    cr_assert(rename(tmp, path) == 0);
}

Test(dim, a_source_swaps_a_changed_file_and_keeps_serving_through_a_broken_one, .init = setup,
     .fini = teardown)
{
    struct lerr e = {{0}};
    struct dim_stats st;
    struct dim_source *src =
        dim_source_new(PUT("m.csv", "merchant_id,category\nm-1,books\n"), 3600000, &e);
    cr_assert(src, "%s", e.msg);
    struct dim *v1 = dim_acquire(src);
    cr_assert_eq(dim_source_check(src, &e), 0, "an unchanged file is not reloaded");

    replace("m.csv", "merchant_id,category\nm-1,toys\nm-2,food\n");
    cr_assert_eq(dim_source_check(src, &e), 1, "%s", e.msg);
    struct dim *v2 = dim_acquire(src);
    cr_assert_str_eq(dim_attr_text(v2, "m-1", "category"), "toys");
    cr_assert_str_eq(dim_attr_text(v1, "m-1", "category"), "books", "a pinned version stays");
    dim_release(src, v1);

    replace("m.csv", "merchant_id,category\nm-1,\"broken\n");
    cr_assert_eq(dim_source_check(src, &e), -1);
    cr_assert(strstr(e.msg, "line 2: bad quoting"), "%s", e.msg);
    struct dim *v3 = dim_acquire(src);
    cr_assert_eq(v3, v2, "a broken file keeps the previous version serving");
    cr_assert_eq(dim_source_check(src, &e), 0, "a broken file is retried once it changes");
    dim_source_stats(src, &st);
    cr_assert_eq(st.loads, 2);
    cr_assert_eq(st.failed_loads, 1);
    cr_assert_eq(st.merchants, 2);
    cr_assert_eq(st.version, dim_version(v2));
    dim_release(src, v3);
    dim_release(src, v2);
    dim_source_free(src);
}

Test(csvrec, splits_quoted_fields_and_refuses_bad_quoting)
{
    struct csvrec r;
    struct lerr e = {{0}};
    cr_assert(csvrec_init(&r, &e) == 0);
    const char line[] = "a,\"b,c\",\"d\"\"e\",, f ";
    cr_assert_eq(csvrec_split(&r, line, sizeof(line) - 1, &e), 5);
    cr_assert_str_eq(csvrec_field(&r, 0), "a");
    cr_assert_str_eq(csvrec_field(&r, 1), "b,c");
    cr_assert_str_eq(csvrec_field(&r, 2), "d\"e");
    cr_assert_str_eq(csvrec_field(&r, 3), "");
    cr_assert_str_eq(csvrec_field(&r, 4), " f ", "blanks are data");
    cr_assert_eq(csvrec_split(&r, "\"open", 5, &e), -1);
    cr_assert_str_eq(e.msg, "bad quoting");
    cr_assert_eq(csvrec_split(&r, "x,y", 3, &e), 2, "a failed record leaves no state behind");
    cr_assert_str_eq(csvrec_field(&r, 1), "y");
    cr_assert_eq(csvrec_split(&r, "", 0, &e), 1);
    csvrec_release(&r);
}
