"""Tests of the Python binding against the real library.

Run from this directory: HASHKV_LIBRARY=/path/to/libhashkv.so python3 -m unittest -v
engine/tests/python_binding.rs runs them under `cargo test`, with HASHKV_TEST_DIR on a
disk-backed filesystem (device files are opened with O_DIRECT, which tmpfs refuses)
and HASHKV_HEADER naming engine/include/hashkv.h.
"""

import os
import re
import shutil
import tempfile
import threading
import unittest

import hashkv

MIB = 1 << 20
HEADER = os.environ.get(
    "HASHKV_HEADER",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "engine",
                 "include", "hashkv.h"))


def small(**extra):
    """Options of a small store: 16 MiB device, 1 MiB main and 64 KiB log segments."""
    options = dict(create_device_bytes=16 * MIB, main_segment_bytes=MIB,
                   log_segment_bytes=64 << 10, write_cache_bytes=256 << 10)
    options.update(extra)
    return options


def value(i, version=1, length=None):
    """A value that names its key and version and whose bytes follow from them."""
    length = length or (i * 37 + version * 101) % 3000 + 1
    seed = f"{i}:{version}:".encode()
    return (seed * (length // len(seed) + 1))[:length]


def key(i):
    return b"key%05d" % i


class Store(unittest.TestCase):
    def setUp(self):
        base = os.environ.get("HASHKV_TEST_DIR") or None
        self.dir = tempfile.mkdtemp(prefix="hashkv-py-", dir=base)
        self.dev = os.path.join(self.dir, "dev.img")
        self.meta = os.path.join(self.dir, "meta")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def format(self, **options):
        return hashkv.format([self.dev], self.meta, **small(**options))


class RoundTrip(Store):
    def test_put_get_delete_batch_scan_flush_reopen(self):
        model = {}
        with self.format() as db:
            for i in range(200):
                db.put(key(i), value(i))
                model[key(i)] = value(i)
            db.put(b"empty", b"")
            model[b"empty"] = b""
            db.put(key(0), value(0, 3), sync=True)
            model[key(0)] = value(0, 3)
            batch = hashkv.WriteBatch()
            for i in range(10, 200, 10):
                batch.put(key(i), value(i, 2))
                model[key(i)] = value(i, 2)
            for i in range(5, 200, 10):
                batch.delete(key(i))
                del model[key(i)]
            self.assertEqual(len(batch), 39)
            db.write(batch, sync=True)
            batch.destroy()
            db.delete(key(1))
            del model[key(1)]
            self.assertIsNone(db.get(b"never"))
            self.assertEqual(db.get(b"empty"), b"")
            for k, v in model.items():
                self.assertEqual(db.get(k), v, k)
            db.flush()
            asked = [key(50), b"never", b"empty", key(5), bytearray(key(50))] + list(model)
            self.assertEqual(db.multi_get(asked), [db.get(k) for k in asked])
            self.assertEqual(db.multi_get([]), [])
            with self.assertRaises(hashkv.InvalidArgument):
                db.multi_get([key(0), b""])
            self.assertEqual(list(db.scan()), sorted(model.items()))
            part = [(k, v) for k, v in sorted(model.items()) if key(50) <= k < key(100)]
            self.assertEqual(list(db.scan(key(50), key(100))), part)
            self.assertEqual(list(db.scan(key(100), key(50))), [])
            for n in [0, 1, 7, len(part), len(part) + 5]:
                self.assertEqual(list(db.scan(key(50), key(100), limit=n)), part[:n])
            with self.assertRaises(ValueError):
                db.scan(limit=-1)
        # Reopened with no options: mode and geometry from the superblock.
        with hashkv.open([self.dev], self.meta) as db:
            self.assertEqual(list(db.scan()), sorted(model.items()))
            db.check()
            stats = db.stats()
            self.assertEqual(stats["user_ops"], 0)
            self.assertGreater(stats["log_segments"], 0)

    def test_every_mode(self):
        for mode in ("hashkv", "vlog", "lsm"):
            with self.subTest(mode=mode):
                self.tearDown()
                self.setUp()
                with self.format(mode=mode) as db:
                    for i in range(50):
                        db.put(key(i), value(i))
                with hashkv.open(self.dev, self.meta) as db:
                    for i in range(50):
                        self.assertEqual(db.get(key(i)), value(i))
                    self.assertEqual(db.multi_get([key(i) for i in range(49, -2, -1)]),
                                     [value(i) for i in range(49, -1, -1)] + [None])
                    db.put(b"more", b"x" * 500)
                    self.assertEqual(db.stats()["user_ops"], 1)

    def test_get_into_and_growing_values(self):
        with self.format() as db:
            db.put(b"k", b"v" * 100)
            buf = bytearray(b"\xaa" * 99)
            with self.assertRaises(hashkv.BufferTooSmall) as cm:
                db.get_into(b"k", buf)
            self.assertEqual((cm.exception.needed, cm.exception.code), (100, -8))
            self.assertEqual(buf, bytearray(b"\xaa" * 99), "nothing is copied")
            buf = bytearray(100)
            self.assertEqual(db.get_into(b"k", buf), 100)
            self.assertEqual(bytes(buf), b"v" * 100)
            self.assertIsNone(db.get_into(b"absent", buf))
            # get grows its buffer past the initial 4 KiB.
            big = bytes(range(256)) * 40
            db.put(b"big", big)
            self.assertEqual(db.get(b"big"), big)
            self.assertEqual(db.get(b"k"), b"v" * 100)

    def test_threads_share_a_store(self):
        failures = []
        with self.format() as db:
            def worker(t):
                try:
                    for i in range(100):
                        db.put(b"t%d-%d" % (t, i), value(i, t))
                    for i in range(100):
                        got = db.get(b"t%d-%d" % (t, i))
                        if got != value(i, t):
                            failures.append((t, i, got))
                except Exception as e:  # reported by the test thread below
                    failures.append((t, e))
            threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(failures, [])
            self.assertEqual(sum(1 for _ in db.scan()), 400)

    def test_close_frees_open_scans(self):
        db = self.format()
        for i in range(20):
            db.put(key(i), value(i))
        scan = db.scan()
        self.assertEqual(next(scan)[0], key(0))
        db.close()
        self.assertEqual(list(scan), [], "a scan of a closed store has ended")
        db.close()
        with self.assertRaises(hashkv.InvalidArgument):
            db.get(key(0))


class Errors(Store):
    def test_second_opener_is_busy(self):
        with self.format():
            with self.assertRaises(hashkv.Busy) as cm:
                hashkv.open(self.dev, self.meta)
            self.assertEqual(cm.exception.code, hashkv.E_BUSY)

    def test_bad_arguments_are_invalid(self):
        with self.assertRaises(hashkv.InvalidArgument) as cm:
            self.format(mode="btree")
        self.assertIn("btree", str(cm.exception))
        with self.assertRaises(hashkv.InvalidArgument):
            self.format(reserved_share=2.0)
        with self.format() as db:
            with self.assertRaises(hashkv.InvalidArgument):
                db.put(b"x" * 1024, b"v")
            with self.assertRaises(hashkv.InvalidArgument):
                db.put(b"", b"v")
            with self.assertRaises(TypeError):
                db.put("text", b"v")
            # A batch with a bad key is refused whole.
            batch = hashkv.WriteBatch([(b"good", b"1"), (b"x" * 1024, b"2")])
            with self.assertRaises(hashkv.InvalidArgument):
                db.write(batch)
            self.assertIsNone(db.get(b"good"))
        with self.assertRaises(hashkv.InvalidArgument) as cm:
            hashkv.open(self.dev, self.meta, mode="lsm")
        self.assertIn("mode", str(cm.exception))

    def test_missing_device_is_not_found(self):
        with self.assertRaises(hashkv.NotFound) as cm:
            hashkv.open(os.path.join(self.dir, "missing.img"), self.meta)
        self.assertIn("missing.img", str(cm.exception))

    def test_full_store(self):
        db = hashkv.format(self.dev, self.meta, create_device_bytes=2 * MIB,
                           main_segment_bytes=256 << 10, log_segment_bytes=16 << 10,
                           write_cache_bytes=0)
        with db:
            with self.assertRaises(hashkv.StoreFull):
                for i in range(2100):
                    db.put(b"full%06d" % i, b"z" * 1000)
            self.assertIsNotNone(db.get(b"full000000"))

    def test_memory_budget_hotness_and_a_synced_delete(self):
        with self.assertRaises(hashkv.InvalidArgument):
            self.format(memory_budget_bytes=MIB)
        budget = 16 * MIB
        with self.format(memory_budget_bytes=budget, hotness=True) as db:
            for i in range(100):
                db.put(key(i), value(i))
            db.flush()
            db.delete(key(7), sync=True)
            usage = db.memory_usage()
            self.assertLessEqual(usage["block_cache_capacity_bytes"], budget, usage)
            self.assertGreater(usage["write_cache_bytes"], 0, usage)
            self.assertEqual(usage["total_bytes"], sum(usage[f] for f in (
                "block_cache_bytes", "pinned_index_filter_bytes", "memtable_bytes",
                "write_cache_bytes", "buffer_pool_bytes", "value_cache_bytes")), usage)
        with hashkv.open([self.dev], self.meta) as db:
            self.assertIsNone(db.get(key(7)))
            self.assertEqual(db.get(key(8)), value(8))
            self.assertGreater(db.memory_usage()["block_cache_capacity_bytes"], budget)

    def test_codes_and_stats_match_the_header(self):
        with open(HEADER) as f:
            header = f.read()
        codes = dict(re.findall(r"#define HASHKV_(E_\w+) (-\d+)", header))
        self.assertEqual(len(codes), 9, codes)
        for name, code in codes.items():
            self.assertEqual(getattr(hashkv, name), int(code), name)
            self.assertIn(int(code), hashkv._ERRORS)
        for c_name, py_struct in (("hashkv_stats", hashkv.Stats),
                                  ("hashkv_memory_usage", hashkv.MemoryUsage)):
            struct = re.search(r"typedef struct \{([^}]*)\} " + c_name + ";", header)
            fields = re.findall(r"uint64_t (\w+);", struct.group(1))
            self.assertEqual(fields, [name for name, _ in py_struct._fields_], c_name)
        expected = os.environ.get("HASHKV_EXPECTED_VERSION")
        if expected:
            self.assertEqual(hashkv.version(), expected)
        self.assertRegex(hashkv.version(), r"^\d+\.\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
