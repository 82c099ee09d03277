/* hashkv from C: format a store, write, write a batch, read, scan, reopen under a memory
 * budget, check.
 *
 * Usage: example DIR [MODE]    MODE: hashkv (default), vlog or lsm
 * Makes DIR/dev.img (a 32 MiB device file) and DIR/meta (the index). Every step
 * checks what it reads against what was written; the program prints
 * "example: ok" and exits 0 when all of them held, and frees everything it got from
 * hashkv, so that valgrind finds no leak. engine/tests/c_programs.rs builds and runs
 * it (also under valgrind). */
#include "hashkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_COUNT 200
/* Values from 1 byte (inline in the index) to about 3 KB (in the value store). */
#define VALUE_BYTES_MAX 3000
#define DEVICE_BYTES (32u << 20)
/* The bound on the engine's memory at the reopen (README, "Memory"). */
#define MEMORY_BUDGET_BYTES (16u << 20)

/* What the store should hold: per key, the version of its value (0: deleted). */
static int expected[KEY_COUNT];

static void key_of(int i, char key[16]) { snprintf(key, 16, "key%05d", i); }

static size_t value_len(int i, int version) {
    return (size_t)((i * 37 + version * 101) % VALUE_BYTES_MAX) + 1;
}

/* A value whose every byte follows from its key and version. */
static void value_of(int i, int version, uint8_t *v) {
    size_t n = value_len(i, version);
    for (size_t j = 0; j < n; j++) v[j] = (uint8_t)(i * 31 + version * 17 + j * 7);
}

static void fail(const char *what, int rc, char *err) {
    fprintf(stderr, "example: %s failed (code %d, last_errcode %d): %s\n", what, rc,
            hashkv_last_errcode(), err ? err : "(no message)");
    hashkv_free(err);
    exit(1);
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "example: check failed: %s\n", what);
        exit(1);
    }
}

static void write_keys(hashkv_db *db) {
    char *err = NULL;
    uint8_t v[VALUE_BYTES_MAX];
    char key[16];
    for (int i = 0; i < KEY_COUNT; i++) {
        key_of(i, key);
        value_of(i, 1, v);
        int rc = hashkv_put(db, (const uint8_t *)key, strlen(key), v, value_len(i, 1), &err);
        if (rc != 0) fail("put", rc, err);
        expected[i] = 1;
    }
    /* One write durable on its own. */
    key_of(0, key);
    value_of(0, 3, v);
    int rc = hashkv_put_sync(db, (const uint8_t *)key, strlen(key), v, value_len(0, 3), &err);
    if (rc != 0) fail("put_sync", rc, err);
    expected[0] = 3;
}

/* Every tenth key gets version 2, every tenth from 5 on is deleted: one atomic,
 * durable batch. */
static void write_batch(hashkv_db *db) {
    char *err = NULL;
    uint8_t v[VALUE_BYTES_MAX];
    char key[16];
    hashkv_writebatch *b = hashkv_writebatch_create();
    check(b != NULL, "writebatch_create");
    for (int i = 10; i < KEY_COUNT; i += 10) {
        key_of(i, key);
        value_of(i, 2, v);
        hashkv_writebatch_put(b, (const uint8_t *)key, strlen(key), v, value_len(i, 2));
        expected[i] = 2;
    }
    for (int i = 5; i < KEY_COUNT; i += 10) {
        key_of(i, key);
        hashkv_writebatch_delete(b, (const uint8_t *)key, strlen(key));
        expected[i] = 0;
    }
    check(hashkv_writebatch_count(b) == 2 * (KEY_COUNT / 10) - 1, "writebatch_count");
    int rc = hashkv_write(db, b, 1, &err);
    if (rc != 0) fail("write", rc, err);
    hashkv_writebatch_destroy(b);
}

/* Reads every key into a buffer that starts too small and grows on demand. */
static void read_keys(hashkv_db *db) {
    char *err = NULL;
    uint8_t want[VALUE_BYTES_MAX];
    char key[16];
    size_t cap = 16;
    uint8_t *buf = malloc(cap);
    check(buf != NULL, "malloc");
    for (int i = 0; i < KEY_COUNT; i++) {
        key_of(i, key);
        size_t len = 0;
        int rc = hashkv_get_into(db, (const uint8_t *)key, strlen(key), buf, cap, &len, &err);
        if (rc == HASHKV_E_BUFFER_TOO_SMALL) {
            hashkv_free(err);
            err = NULL;
            check(len > cap, "BUFFER_TOO_SMALL reports the size needed");
            free(buf);
            cap = len;
            buf = malloc(cap);
            check(buf != NULL, "malloc");
            rc = hashkv_get_into(db, (const uint8_t *)key, strlen(key), buf, cap, &len, &err);
        }
        if (rc < 0) fail("get_into", rc, err);
        if (expected[i] == 0) {
            check(rc == 0 && len == 0, "a deleted key is not found");
            continue;
        }
        value_of(i, expected[i], want);
        check(rc == 1, "a written key is found");
        check(len == value_len(i, expected[i]) && memcmp(buf, want, len) == 0,
              "get_into returns the newest value");
    }
    free(buf);
    /* hashkv_get allocates the value; the caller frees it. */
    uint8_t *v = NULL;
    size_t vlen = 0;
    key_of(10, key);
    int rc = hashkv_get(db, (const uint8_t *)key, strlen(key), &v, &vlen, &err);
    if (rc < 0) fail("get", rc, err);
    value_of(10, 2, want);
    check(rc == 1 && vlen == value_len(10, 2) && memcmp(v, want, vlen) == 0, "get");
    hashkv_free(v);
}

/* Scans [lower, upper) (NULL: unbounded) and checks it yields exactly the live keys
 * in that range, in order, with their newest values. Returns how many it saw. */
static int scan_range(hashkv_db *db, int lower, int upper) {
    char *err = NULL;
    char lo[16], hi[16];
    key_of(lower, lo);
    key_of(upper, hi);
    hashkv_iter *it = hashkv_scan(db, lower > 0 ? (const uint8_t *)lo : NULL, strlen(lo),
                                  upper < KEY_COUNT ? (const uint8_t *)hi : NULL, strlen(hi),
                                  &err);
    if (it == NULL) fail("scan", hashkv_last_errcode(), err);
    uint8_t want[VALUE_BYTES_MAX];
    int next = lower, seen = 0;
    for (;;) {
        uint8_t *k = NULL, *v = NULL;
        size_t klen = 0, vlen = 0;
        int rc = hashkv_iter_next(it, &k, &klen, &v, &vlen, &err);
        if (rc < 0) fail("iter_next", rc, err);
        if (rc == 0) break;
        while (next < upper && expected[next] == 0) next++;
        char key[16];
        key_of(next, key);
        check(next < upper && klen == strlen(key) && memcmp(k, key, klen) == 0,
              "scan yields the next live key");
        value_of(next, expected[next], want);
        check(vlen == value_len(next, expected[next]) && memcmp(v, want, vlen) == 0,
              "scan yields the newest value");
        hashkv_free(k);
        hashkv_free(v);
        next++;
        seen++;
    }
    while (next < upper && expected[next] == 0) next++;
    check(next == upper, "scan yields every live key");
    hashkv_iter_free(it);
    return seen;
}

static hashkv_db *open_store(const char *dir, const hashkv_options *opts, int format) {
    char dev[4096], meta[4096];
    snprintf(dev, sizeof dev, "%s/dev.img", dir);
    snprintf(meta, sizeof meta, "%s/meta", dir);
    const char *devices[1] = {dev};
    char *err = NULL;
    hashkv_db *db = format ? hashkv_format(devices, 1, meta, opts, &err)
                           : hashkv_open(devices, 1, meta, opts, &err);
    if (db == NULL) fail(format ? "format" : "open", hashkv_last_errcode(), err);
    return db;
}

static void close_store(hashkv_db *db) {
    char *err = NULL;
    int rc = hashkv_close(db, &err);
    if (rc != 0) fail("close", rc, err);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [hashkv|vlog|lsm]\n", argv[0]);
        return 2;
    }
    const char *mode = argc > 2 ? argv[2] : "hashkv";
    printf("example: hashkv %s, mode %s\n", hashkv_version(), mode);

    hashkv_options *opts = hashkv_options_new();
    hashkv_options_set_mode(opts, mode);
    hashkv_options_set_create_device_bytes(opts, DEVICE_BYTES);
    hashkv_options_set_main_segment_bytes(opts, 1u << 20);
    hashkv_options_set_log_segment_bytes(opts, 64u << 10);
    hashkv_options_set_write_cache_bytes(opts, 256u << 10);
    hashkv_db *db = open_store(argv[1], opts, 1);
    hashkv_options_free(opts);

    write_keys(db);
    write_batch(db);
    read_keys(db);
    int live = scan_range(db, 0, KEY_COUNT);
    scan_range(db, 50, 100);
    printf("example: wrote %d keys, %d live after the batch\n", KEY_COUNT, live);
    close_store(db);

    /* Reopen under a memory budget, with no other option: mode and geometry come from
     * the superblock. */
    opts = hashkv_options_new();
    hashkv_options_set_memory_budget_bytes(opts, MEMORY_BUDGET_BYTES);
    db = open_store(argv[1], opts, 0);
    hashkv_options_free(opts);
    read_keys(db);
    check(scan_range(db, 0, KEY_COUNT) == live, "the reopened store holds every live key");
    char *err = NULL;
    int rc = hashkv_check(db, &err);
    if (rc != 0) fail("check", rc, err);
    hashkv_stats stats;
    rc = hashkv_get_stats(db, &stats, sizeof stats, &err);
    if (rc != 0) fail("get_stats", rc, err);
    check(stats.user_ops == 0, "a reopened store has written nothing yet");
    printf("example: check clean; value bytes in use %llu, log segments free %llu of %llu\n",
           (unsigned long long)stats.value_bytes_used,
           (unsigned long long)stats.free_log_segments,
           (unsigned long long)stats.log_segments);
    hashkv_memory_usage usage;
    rc = hashkv_get_memory_usage(db, &usage, sizeof usage, &err);
    if (rc != 0) fail("get_memory_usage", rc, err);
    check(usage.block_cache_capacity_bytes <= MEMORY_BUDGET_BYTES,
          "the index's block cache stays within the budget");
    printf("example: memory in use %llu bytes (block cache %llu of %llu, write cache %llu)\n",
           (unsigned long long)usage.total_bytes, (unsigned long long)usage.block_cache_bytes,
           (unsigned long long)usage.block_cache_capacity_bytes,
           (unsigned long long)usage.write_cache_bytes);
    close_store(db);
    printf("example: ok\n");
    return 0;
}
