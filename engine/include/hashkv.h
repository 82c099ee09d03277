/* hashkv C API. Link with -lhashkv (libhashkv.so or libhashkv.a from the engine crate).
 *
 * Conventions:
 * - Functions returning int return 0 on success and -1 on error; hashkv_get returns 1
 *   when the key was found, 0 when it was not, -1 on error.
 * - On error, if errptr is not NULL, *errptr receives a message allocated by hashkv;
 *   free it with hashkv_free. On success *errptr is left unchanged.
 * - Values returned through uint8_t** are allocated by hashkv; free with hashkv_free.
 * - A hashkv_db may be used from many threads at once. Iterators must be freed before
 *   the database is closed.
 */
#ifndef HASHKV_H
#define HASHKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hashkv_db hashkv_db;
typedef struct hashkv_options hashkv_options;
typedef struct hashkv_iter hashkv_iter;

hashkv_options *hashkv_options_new(void);
void hashkv_options_free(hashkv_options *opts);
void hashkv_options_set_main_segment_bytes(hashkv_options *opts, uint64_t bytes);
void hashkv_options_set_log_segment_bytes(hashkv_options *opts, uint64_t bytes);
void hashkv_options_set_reserved_share(hashkv_options *opts, double share);
void hashkv_options_set_write_cache_bytes(hashkv_options *opts, uint64_t bytes);
void hashkv_options_set_separation_threshold_bytes(hashkv_options *opts, uint64_t bytes);
void hashkv_options_set_sync_writes(hashkv_options *opts, int on);
void hashkv_options_set_force_format(hashkv_options *opts, int on);
/* When formatting one path that does not exist, create a file of this size. */
void hashkv_options_set_create_device_bytes(hashkv_options *opts, uint64_t bytes);

/* Formats the devices (one, or several to stripe over) and opens the new store. */
hashkv_db *hashkv_format(const char *const *devices, size_t device_count,
                         const char *metadata_dir, const hashkv_options *opts,
                         char **errptr);
/* Opens an existing store; opts must name the segment sizes it was formatted with. */
hashkv_db *hashkv_open(const char *const *devices, size_t device_count,
                       const char *metadata_dir, const hashkv_options *opts,
                       char **errptr);
/* Flushes and closes; returns -1 if the final flush failed (the handle is freed anyway). */
int hashkv_close(hashkv_db *db, char **errptr);

int hashkv_put(hashkv_db *db, const uint8_t *key, size_t key_len, const uint8_t *value,
               size_t value_len, char **errptr);
int hashkv_delete(hashkv_db *db, const uint8_t *key, size_t key_len, char **errptr);
int hashkv_get(hashkv_db *db, const uint8_t *key, size_t key_len, uint8_t **value,
               size_t *value_len, char **errptr);
/* Makes every earlier write durable. */
int hashkv_flush(hashkv_db *db, char **errptr);

/* Keys in [lower, upper) in ascending order. A NULL bound is unbounded. */
hashkv_iter *hashkv_scan(hashkv_db *db, const uint8_t *lower, size_t lower_len,
                         const uint8_t *upper, size_t upper_len, char **errptr);
/* 1: *key and *value hold the next pair (free both with hashkv_free); 0: the end;
 * -1: an error. */
int hashkv_iter_next(hashkv_iter *it, uint8_t **key, size_t *key_len, uint8_t **value,
                     size_t *value_len, char **errptr);
void hashkv_iter_free(hashkv_iter *it);

void hashkv_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* HASHKV_H */
