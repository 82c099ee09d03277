/* The C API's failures, from C: every case checks the documented code, that
 * hashkv_last_errcode() agrees, and that a message came back.
 *
 * Usage: errors DIR     (DIR on a disk-backed filesystem: devices use O_DIRECT)
 * Cases: NULL arguments, impossible lengths, too-small buffers, bad options, a
 * missing device, a second opener, a contradicting reopen, an invalid batch, a full
 * store, a damaged record. Prints "errors: N passed, 0 failed" and exits 0 when all
 * held; on the first failure prints the line and exits 1. Run by
 * engine/tests/c_programs.rs. */
#define _GNU_SOURCE /* memmem */
#include "hashkv.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed;
static char *err;

#define FAIL(...)                                                   \
    do {                                                            \
        fprintf(stderr, "errors.c:%d: ", __LINE__);                 \
        fprintf(stderr, __VA_ARGS__);                               \
        fprintf(stderr, "\nerrors: %d passed, 1 failed\n", passed); \
        exit(1);                                                    \
    } while (0)

#define CHECK(cond)                                       \
    do {                                                  \
        if (!(cond)) FAIL("check failed: %s", #cond);     \
        passed++;                                         \
    } while (0)

/* `rc` is the documented `code`, the thread's last code agrees, and a message
 * containing `needle` (if not NULL) came back; the message is freed. */
#define EXPECT_CODE(rc, code, needle) expect_code((rc), (code), (needle), #rc, __LINE__)

static void expect_code(int rc, int code, const char *needle, const char *call, int line) {
    if (rc != code)
        FAIL("line %d: %s returned %d, expected %d (message: %s)", line, call, rc, code,
             err ? err : "none");
    if (hashkv_last_errcode() != code)
        FAIL("line %d: hashkv_last_errcode() is %d after %s, expected %d", line,
             hashkv_last_errcode(), call, code);
    if (err == NULL) FAIL("line %d: %s left no message", line, call);
    if (needle != NULL && strstr(err, needle) == NULL)
        FAIL("line %d: message of %s lacks \"%s\": %s", line, call, needle, err);
    hashkv_free(err);
    err = NULL;
    passed++;
}

static const uint8_t *b(const char *s) { return (const uint8_t *)s; }

struct store {
    char dev[4096], meta[4096];
    const char *devices[1];
};

static void store_paths(struct store *s, const char *dir, const char *name) {
    snprintf(s->dev, sizeof s->dev, "%s/%s.img", dir, name);
    snprintf(s->meta, sizeof s->meta, "%s/%s.meta", dir, name);
    s->devices[0] = s->dev;
}

/* Small geometry: 256 KiB main segments, 16 KiB log segments. */
static hashkv_options *small_options(uint64_t device_bytes) {
    hashkv_options *o = hashkv_options_new();
    hashkv_options_set_create_device_bytes(o, device_bytes);
    hashkv_options_set_main_segment_bytes(o, 256u << 10);
    hashkv_options_set_log_segment_bytes(o, 16u << 10);
    hashkv_options_set_write_cache_bytes(o, 0);
    return o;
}

static hashkv_db *must_open(struct store *s, const hashkv_options *o, int format) {
    hashkv_db *db = format ? hashkv_format(s->devices, 1, s->meta, o, &err)
                           : hashkv_open(s->devices, 1, s->meta, o, &err);
    if (db == NULL)
        FAIL("%s %s: code %d: %s", format ? "format" : "open", s->dev, hashkv_last_errcode(),
             err ? err : "none");
    return db;
}

static void must_close(hashkv_db *db) {
    int rc = hashkv_close(db, &err);
    if (rc != 0) FAIL("close: code %d: %s", rc, err ? err : "none");
}

static void null_arguments(void) {
    uint8_t *v = NULL, *k = NULL;
    size_t vl = 0, kl = 0;
    uint8_t buf[8];
    hashkv_stats stats;
    const int E = HASHKV_E_INVALID_ARGUMENT;
    EXPECT_CODE(hashkv_put(NULL, b("k"), 1, b("v"), 1, &err), E, "db is NULL");
    EXPECT_CODE(hashkv_put_sync(NULL, b("k"), 1, b("v"), 1, &err), E, "db is NULL");
    EXPECT_CODE(hashkv_get(NULL, b("k"), 1, &v, &vl, &err), E, "db is NULL");
    EXPECT_CODE(hashkv_get_into(NULL, b("k"), 1, buf, sizeof buf, &vl, &err), E, NULL);
    EXPECT_CODE(hashkv_delete(NULL, b("k"), 1, &err), E, NULL);
    EXPECT_CODE(hashkv_flush(NULL, &err), E, NULL);
    EXPECT_CODE(hashkv_check(NULL, &err), E, NULL);
    EXPECT_CODE(hashkv_get_stats(NULL, &stats, sizeof stats, &err), E, NULL);
    EXPECT_CODE(hashkv_close(NULL, &err), E, NULL);
    EXPECT_CODE(hashkv_write(NULL, NULL, 0, &err), E, NULL);
    EXPECT_CODE(hashkv_iter_next(NULL, &k, &kl, &v, &vl, &err), E, "iterator is NULL");
    CHECK(hashkv_scan(NULL, NULL, 0, NULL, 0, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), E, "db is NULL");
    CHECK(hashkv_format(NULL, 0, "meta", NULL, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), E, "no device");
    /* errptr NULL: the code alone reports. */
    CHECK(hashkv_flush(NULL, NULL) == E);
    /* Frees and destructors ignore NULL. */
    hashkv_free(NULL);
    hashkv_iter_free(NULL);
    hashkv_options_free(NULL);
    hashkv_writebatch_destroy(NULL);
    /* Setters return void: the thread's last code reports a NULL. */
    hashkv_options_set_sync_writes(NULL, 1);
    CHECK(hashkv_last_errcode() == E);
    hashkv_writebatch_put(NULL, b("k"), 1, b("v"), 1);
    CHECK(hashkv_last_errcode() == E);
    CHECK(hashkv_writebatch_count(NULL) == 0);
}

static void bad_options(const char *dir) {
    struct store s;
    store_paths(&s, dir, "bad");
    hashkv_options *o = small_options(8u << 20);
    hashkv_options_set_mode(o, "btree");
    CHECK(hashkv_last_errcode() == HASHKV_E_INVALID_ARGUMENT);
    CHECK(hashkv_format(s.devices, 1, s.meta, o, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "btree");
    hashkv_options_set_mode(o, "vlog");
    hashkv_options_set_reserved_share(o, 2.0);
    CHECK(hashkv_format(s.devices, 1, s.meta, o, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "reserved_share");
    hashkv_options_set_reserved_share(o, 0.3);
    hashkv_options_set_log_segment_bytes(o, 1000);
    CHECK(hashkv_format(s.devices, 1, s.meta, o, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "log_segment_bytes");
    /* A device too small for the default 64 MiB main segments. */
    hashkv_options *defaults = hashkv_options_new();
    hashkv_options_set_create_device_bytes(defaults, 8u << 20);
    CHECK(hashkv_format(s.devices, 1, s.meta, defaults, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "too small");
    hashkv_options_free(defaults);
    hashkv_options_free(o);
    /* A device that does not exist, opened. */
    store_paths(&s, dir, "missing");
    CHECK(hashkv_open(s.devices, 1, s.meta, NULL, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_NOT_FOUND, "missing.img");
}

static void buffers_keys_and_openers(const char *dir) {
    struct store s;
    store_paths(&s, dir, "main");
    hashkv_options *o = small_options(8u << 20);
    hashkv_db *db = must_open(&s, o, 1);
    uint8_t value[100];
    memset(value, 'v', sizeof value);
    CHECK(hashkv_put(db, b("k"), 1, value, sizeof value, &err) == 0);

    /* Too small: nothing copied, the size needed reported. */
    uint8_t buf[100];
    size_t len = 0;
    memset(buf, 0xAA, sizeof buf);
    EXPECT_CODE(hashkv_get_into(db, b("k"), 1, buf, 99, &len, &err),
                HASHKV_E_BUFFER_TOO_SMALL, "100 bytes");
    CHECK(len == 100 && buf[0] == 0xAA && buf[98] == 0xAA);
    EXPECT_CODE(hashkv_get_into(db, b("k"), 1, NULL, 0, &len, &err),
                HASHKV_E_BUFFER_TOO_SMALL, NULL);
    CHECK(len == 100);
    CHECK(hashkv_get_into(db, b("k"), 1, buf, 100, &len, &err) == 1);
    CHECK(len == 100 && memcmp(buf, value, 100) == 0);
    CHECK(hashkv_get_into(db, b("nope"), 4, buf, 100, &len, &err) == 0 && len == 0);
    EXPECT_CODE(hashkv_get_into(db, b("k"), 1, NULL, 10, &len, &err),
                HASHKV_E_INVALID_ARGUMENT, "buf is NULL");
    EXPECT_CODE(hashkv_get_into(db, b("k"), 1, buf, 100, NULL, &err),
                HASHKV_E_INVALID_ARGUMENT, "value_len is NULL");

    /* NULL and impossible lengths, keys out of bounds. */
    EXPECT_CODE(hashkv_put(db, NULL, 3, value, 1, &err), HASHKV_E_INVALID_ARGUMENT,
                "key is NULL");
    EXPECT_CODE(hashkv_put(db, b("k"), SIZE_MAX, value, 1, &err),
                HASHKV_E_INVALID_ARGUMENT, "impossible");
    EXPECT_CODE(hashkv_put(db, b("k"), 0, value, 1, &err), HASHKV_E_INVALID_ARGUMENT,
                "empty");
    static uint8_t long_key[HASHKV_KEY_BYTES_MAX + 1];
    memset(long_key, 'x', sizeof long_key);
    EXPECT_CODE(hashkv_put(db, long_key, sizeof long_key, value, 1, &err),
                HASHKV_E_INVALID_ARGUMENT, "exceeds the limit");
    CHECK(hashkv_put(db, long_key, HASHKV_KEY_BYTES_MAX, value, 1, &err) == 0);

    /* A batch with one bad entry is refused whole. */
    hashkv_writebatch *wb = hashkv_writebatch_create();
    hashkv_writebatch_put(wb, b("batched"), 7, value, 10);
    hashkv_writebatch_delete(wb, b("k"), 1);
    hashkv_writebatch_put(wb, NULL, 5, value, 10);
    CHECK(hashkv_last_errcode() == HASHKV_E_INVALID_ARGUMENT);
    EXPECT_CODE(hashkv_write(db, wb, 1, &err), HASHKV_E_INVALID_ARGUMENT, "none is applied");
    CHECK(hashkv_get_into(db, b("batched"), 7, buf, 100, &len, &err) == 0);
    CHECK(hashkv_get_into(db, b("k"), 1, buf, 100, &len, &err) == 1);
    hashkv_writebatch_destroy(wb);

    /* A second opener is busy; the first keeps working. */
    CHECK(hashkv_open(s.devices, 1, s.meta, NULL, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_BUSY, NULL);
    CHECK(hashkv_get_into(db, b("k"), 1, buf, 100, &len, &err) == 1);
    must_close(db);

    /* Reopening with a contradicting size or mode is refused; NULL options work. */
    hashkv_options *other = hashkv_options_new();
    hashkv_options_set_log_segment_bytes(other, 32u << 10);
    CHECK(hashkv_open(s.devices, 1, s.meta, other, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "log segment");
    hashkv_options_free(other);
    other = hashkv_options_new();
    hashkv_options_set_mode(other, "lsm");
    CHECK(hashkv_open(s.devices, 1, s.meta, other, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "mode");
    hashkv_options_free(other);
    /* Formatting over it without force: refused. */
    CHECK(hashkv_format(s.devices, 1, s.meta, o, &err) == NULL);
    EXPECT_CODE(hashkv_last_errcode(), HASHKV_E_INVALID_ARGUMENT, "force");
    db = must_open(&s, NULL, 0);
    CHECK(hashkv_get_into(db, b("k"), 1, buf, 100, &len, &err) == 1);
    must_close(db);
    hashkv_options_free(o);
}

/* Fills a 2 MiB store with distinct 1000-byte values until it is full. */
static void full_store(const char *dir) {
    struct store s;
    store_paths(&s, dir, "full");
    hashkv_options *o = small_options(2u << 20);
    hashkv_db *db = must_open(&s, o, 1);
    hashkv_options_free(o);
    uint8_t value[1000];
    char key[32];
    int rc = 0, i;
    /* 2 MiB hold fewer than 2100 values of 1000 bytes: the loop must end in full. */
    for (i = 0; i < 2100; i++) {
        snprintf(key, sizeof key, "full%06d", i);
        memset(value, 'a' + i % 26, sizeof value);
        rc = hashkv_put(db, b(key), strlen(key), value, sizeof value, &err);
        if (rc != 0) break;
    }
    if (rc == 0) FAIL("2100 puts of 1000 bytes into a 2 MiB store all succeeded");
    EXPECT_CODE(rc, HASHKV_E_STORE_FULL, "store full");
    CHECK(i > 100);
    printf("errors: the 2 MiB store was full after %d puts of 1000 bytes\n", i);
    /* The refused put changed nothing; earlier ones read back; the same put again
     * is refused the same way (not poisoned). Another key's put may still succeed,
     * when its group's last segment has room left. */
    uint8_t buf[1000];
    size_t len = 0;
    CHECK(hashkv_get_into(db, b(key), strlen(key), buf, sizeof buf, &len, &err) == 0);
    CHECK(hashkv_get_into(db, b("full000000"), 10, buf, sizeof buf, &len, &err) == 1);
    CHECK(len == 1000 && buf[0] == 'a');
    EXPECT_CODE(hashkv_put(db, b(key), strlen(key), value, sizeof value, &err),
                HASHKV_E_STORE_FULL, NULL);
    must_close(db);
}

/* Reads the whole file at `path` into malloc'd memory. */
static uint8_t *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) FAIL("open %s", path);
    uint8_t *data = malloc((size_t)st.st_size);
    if (data == NULL || pread(fd, data, (size_t)st.st_size, 0) != st.st_size)
        FAIL("read %s", path);
    close(fd);
    *len = (size_t)st.st_size;
    return data;
}

/* Flips one byte of a stored value on the device file: get and check report
 * corruption, and no wrong value is returned. */
static void damaged_record(const char *dir) {
    struct store s;
    store_paths(&s, dir, "damaged");
    hashkv_options *o = small_options(8u << 20);
    hashkv_db *db = must_open(&s, o, 1);
    hashkv_options_free(o);
    const char *marker = "a value that is easy to find on the device";
    uint8_t value[500];
    memset(value, '.', sizeof value);
    memcpy(value, marker, strlen(marker));
    CHECK(hashkv_put(db, b("victim"), 6, value, sizeof value, &err) == 0);
    CHECK(hashkv_put(db, b("bystander"), 9, value + 100, 400, &err) == 0);
    must_close(db);

    size_t len;
    uint8_t *data = read_file(s.dev, &len);
    uint8_t *at = memmem(data, len, marker, strlen(marker));
    if (at == NULL) FAIL("the value is not on the device");
    off_t offset = at - data;
    free(data);
    int fd = open(s.dev, O_WRONLY);
    uint8_t flipped = 'A';
    CHECK(fd >= 0 && pwrite(fd, &flipped, 1, offset) == 1 && fsync(fd) == 0);
    close(fd);

    db = must_open(&s, NULL, 0);
    uint8_t buf[500];
    EXPECT_CODE(hashkv_get_into(db, b("victim"), 6, buf, sizeof buf, &len, &err),
                HASHKV_E_CORRUPTION, NULL);
    EXPECT_CODE(hashkv_check(db, &err), HASHKV_E_CORRUPTION, "damaged");
    must_close(db);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    null_arguments();
    bad_options(argv[1]);
    buffers_keys_and_openers(argv[1]);
    full_store(argv[1]);
    damaged_record(argv[1]);
    printf("errors: %d passed, 0 failed\n", passed);
    return 0;
}
