"""hashkv for Python: the C API of libhashkv through ctypes (no compiled extension).

    import hashkv

    with hashkv.format(["store.img"], "store.meta", create_device_bytes=64 << 20,
                       main_segment_bytes=1 << 20, log_segment_bytes=64 << 10) as db:
        db.put(b"key", b"value")
        assert db.multi_get([b"key", b"absent"]) == [b"value", None]
        batch = hashkv.WriteBatch().put(b"a", b"1").delete(b"key")
        db.write(batch, sync=True)
        for key, value in db.scan(b"a", b"z"):
            ...
    with hashkv.open(["store.img"], "store.meta") as db:   # geometry from the device
        assert db.get(b"a") == b"1"

The library is loaded on first use from the path in HASHKV_LIBRARY, else by the
dynamic loader's search (an installed libhashkv, see engine/install-c.sh). Failures
raise a subclass of `hashkv.Error` chosen by the C error code. A `DB` may be used
from several threads (calls into the library release the GIL); a `WriteBatch` or a
`Scan` by one thread at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import weakref
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    "DB", "WriteBatch", "Scan", "format", "open", "version", "Error",
    "InvalidArgument", "NotFound", "StoreFull", "Busy", "IoError", "Corruption",
    "Poisoned", "BufferTooSmall", "Panic",
]

# The C API's error codes (engine/include/hashkv.h); their values are fixed.
E_INVALID_ARGUMENT = -1
E_NOT_FOUND = -2
E_STORE_FULL = -3
E_BUSY = -4
E_IO = -5
E_CORRUPTION = -6
E_POISONED = -7
E_BUFFER_TOO_SMALL = -8
E_PANIC = -9

# A get starts with a buffer this large per thread and grows it to the largest value
# read, so most gets copy once and allocate nothing in C.
_GET_BUFFER_BYTES_INITIAL = 4096


class Error(Exception):
    """A failed hashkv call: `code` is the C error code, `message` hashkv's text."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidArgument(Error, ValueError):
    """Bad arguments, options, keys or values; devices that do not fit the request."""


class NotFound(Error, LookupError):
    """A device or the metadata directory does not exist (a missing key is None)."""


class StoreFull(Error):
    """No free value space even after garbage collection; the write changed nothing."""


class Busy(Error):
    """The devices or the metadata directory are open elsewhere."""


class IoError(Error, OSError):
    """A device or the index failed an I/O operation."""


class Corruption(Error):
    """Damaged data was read, or check() found damage."""


class Poisoned(Error):
    """The store refuses writes after an earlier I/O error or corruption."""


class BufferTooSmall(Error):
    """get_into: the value does not fit; `needed` is its size."""

    def __init__(self, code: int, message: str, needed: int = 0):
        super().__init__(code, message)
        self.needed = needed


class Panic(Error):
    """A bug inside hashkv, stopped at the C boundary."""


_ERRORS = {
    E_INVALID_ARGUMENT: InvalidArgument,
    E_NOT_FOUND: NotFound,
    E_STORE_FULL: StoreFull,
    E_BUSY: Busy,
    E_IO: IoError,
    E_CORRUPTION: Corruption,
    E_POISONED: Poisoned,
    E_BUFFER_TOO_SMALL: BufferTooSmall,
    E_PANIC: Panic,
}


class Stats(ctypes.Structure):
    """hashkv_stats: counters since the store was opened (see hashkv.h)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "user_bytes_written", "user_ops", "flush_device_bytes_written",
        "gc_device_bytes_written", "gc_device_bytes_read", "read_device_bytes",
        "gc_runs", "gc_records_kept", "gc_bytes_reclaimed", "gc_index_lookups",
        "write_cache_hits", "flushes", "lsm_bytes_written", "device_bytes_written",
        "device_bytes_read", "free_log_segments", "log_segments", "value_bytes_used",
        "value_cache_hits", "demotions", "promotions", "cold_gc_runs", "cold_log_bytes",
        "cold_live_bytes", "paced_writes", "paced_micros", "gc_prefetch_bytes_used",
        "gc_prefetch_bytes_unused", "gc_runs_in_flush",
    )]


class MemoryUsage(ctypes.Structure):
    """hashkv_memory_usage: what an open store holds in memory, in bytes (see hashkv.h)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "total_bytes", "block_cache_bytes", "block_cache_capacity_bytes",
        "pinned_index_filter_bytes", "memtable_bytes", "write_cache_bytes",
        "buffer_pool_bytes", "read_buffer_bytes", "value_cache_bytes",
        "block_cache_loan_bytes",
    )]


_P = ctypes.c_void_p
_ERR = ctypes.POINTER(ctypes.c_void_p)
_BYTES = ctypes.c_char_p
_SIZE = ctypes.c_size_t
_SIZE_P = ctypes.POINTER(ctypes.c_size_t)
_OUT = ctypes.POINTER(ctypes.c_void_p)
_INT = ctypes.c_int

# name: (result type, argument types), as declared in hashkv.h.
_SIGNATURES = {
    "hashkv_version": (ctypes.c_char_p, []),
    "hashkv_free": (None, [_P]),
    "hashkv_last_errcode": (_INT, []),
    "hashkv_options_new": (_P, []),
    "hashkv_options_free": (None, [_P]),
    "hashkv_options_set_mode": (None, [_P, ctypes.c_char_p]),
    "hashkv_options_set_main_segment_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_log_segment_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_reserved_share": (None, [_P, ctypes.c_double]),
    "hashkv_options_set_write_cache_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_separation_threshold_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_sync_writes": (None, [_P, _INT]),
    "hashkv_options_set_force_format": (None, [_P, _INT]),
    "hashkv_options_set_create_device_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_memory_budget_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_value_cache_bytes": (None, [_P, ctypes.c_uint64]),
    "hashkv_options_set_hotness": (None, [_P, _INT]),
    "hashkv_format": (_P, [ctypes.POINTER(ctypes.c_char_p), _SIZE, ctypes.c_char_p, _P, _ERR]),
    "hashkv_open": (_P, [ctypes.POINTER(ctypes.c_char_p), _SIZE, ctypes.c_char_p, _P, _ERR]),
    "hashkv_close": (_INT, [_P, _ERR]),
    "hashkv_put": (_INT, [_P, _BYTES, _SIZE, _BYTES, _SIZE, _ERR]),
    "hashkv_put_sync": (_INT, [_P, _BYTES, _SIZE, _BYTES, _SIZE, _ERR]),
    "hashkv_delete": (_INT, [_P, _BYTES, _SIZE, _ERR]),
    "hashkv_delete_sync": (_INT, [_P, _BYTES, _SIZE, _ERR]),
    "hashkv_get_into": (_INT, [_P, _BYTES, _SIZE, _P, _SIZE, _SIZE_P, _ERR]),
    "hashkv_multi_get": (_INT, [_P, ctypes.POINTER(ctypes.c_char_p), _SIZE_P, _SIZE, _OUT,
                                _SIZE_P, _ERR]),
    "hashkv_flush": (_INT, [_P, _ERR]),
    "hashkv_writebatch_create": (_P, []),
    "hashkv_writebatch_put": (None, [_P, _BYTES, _SIZE, _BYTES, _SIZE]),
    "hashkv_writebatch_delete": (None, [_P, _BYTES, _SIZE]),
    "hashkv_writebatch_clear": (None, [_P]),
    "hashkv_writebatch_count": (_SIZE, [_P]),
    "hashkv_writebatch_destroy": (None, [_P]),
    "hashkv_write": (_INT, [_P, _P, _INT, _ERR]),
    "hashkv_scan": (_P, [_P, _BYTES, _SIZE, _BYTES, _SIZE, _ERR]),
    "hashkv_scan_limit": (_P, [_P, _BYTES, _SIZE, _BYTES, _SIZE, _SIZE, _ERR]),
    "hashkv_iter_next": (_INT, [_P, _OUT, _SIZE_P, _OUT, _SIZE_P, _ERR]),
    "hashkv_iter_free": (None, [_P]),
    "hashkv_check": (_INT, [_P, _ERR]),
    "hashkv_get_stats": (_INT, [_P, ctypes.POINTER(Stats), _SIZE, _ERR]),
    "hashkv_get_memory_usage": (_INT, [_P, ctypes.POINTER(MemoryUsage), _SIZE, _ERR]),
}

_lib_lock = threading.Lock()
_lib_loaded: Optional[ctypes.CDLL] = None


def _find_library() -> str:
    path = os.environ.get("HASHKV_LIBRARY")
    if path:
        return path
    found = ctypes.util.find_library("hashkv")
    if found:
        return found
    raise OSError(
        "libhashkv not found: set HASHKV_LIBRARY to the path of libhashkv.so, or "
        "install it (cargo build --release -p hashkv && engine/install-c.sh)")


def _lib() -> ctypes.CDLL:
    """The C library, loaded once with every function's signature declared."""
    global _lib_loaded
    with _lib_lock:
        if _lib_loaded is None:
            lib = ctypes.CDLL(_find_library())
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib_loaded = lib
        return _lib_loaded


def _raise(code: int, err: ctypes.c_void_p, **extra) -> None:
    """Raises the exception for a failed call, freeing hashkv's message."""
    message = "(no message)"
    if err.value:
        message = ctypes.string_at(err.value).decode("utf-8", "replace")
        _lib().hashkv_free(err)
        err.value = None
    raise _ERRORS.get(code, Error)(code, message, **extra)


def _call(fn, *args) -> int:
    """Calls an int-returning function with an errptr last; raises on failure."""
    err = ctypes.c_void_p()
    rc = fn(*args, ctypes.byref(err))
    if rc < 0:
        _raise(rc, err)
    return rc


def _bytes(b: Union[bytes, bytearray, memoryview], what: str) -> bytes:
    if isinstance(b, bytes):
        return b
    if isinstance(b, (bytearray, memoryview)):
        return bytes(b)
    raise TypeError(f"{what} must be bytes-like, not {type(b).__name__}")


def version() -> str:
    """The library's version."""
    return _lib().hashkv_version().decode()


def _options(mode=None, main_segment_bytes=None, log_segment_bytes=None,
             reserved_share=None, write_cache_bytes=None,
             separation_threshold_bytes=None, sync_writes=None, force=None,
             create_device_bytes=None, memory_budget_bytes=None,
             value_cache_bytes=None, hotness=None) -> ctypes.c_void_p:
    """A hashkv_options with the settings given (None: the library's default, or on
    open what the superblock says). The caller frees it."""
    lib = _lib()
    o = ctypes.c_void_p(lib.hashkv_options_new())
    setters = [
        (mode, lambda v: lib.hashkv_options_set_mode(o, v.encode())),
        (main_segment_bytes, lambda v: lib.hashkv_options_set_main_segment_bytes(o, v)),
        (log_segment_bytes, lambda v: lib.hashkv_options_set_log_segment_bytes(o, v)),
        (reserved_share, lambda v: lib.hashkv_options_set_reserved_share(o, v)),
        (write_cache_bytes, lambda v: lib.hashkv_options_set_write_cache_bytes(o, v)),
        (separation_threshold_bytes,
         lambda v: lib.hashkv_options_set_separation_threshold_bytes(o, v)),
        (sync_writes, lambda v: lib.hashkv_options_set_sync_writes(o, int(bool(v)))),
        (force, lambda v: lib.hashkv_options_set_force_format(o, int(bool(v)))),
        (create_device_bytes, lambda v: lib.hashkv_options_set_create_device_bytes(o, v)),
        (memory_budget_bytes,
         lambda v: lib.hashkv_options_set_memory_budget_bytes(o, v)),
        (value_cache_bytes, lambda v: lib.hashkv_options_set_value_cache_bytes(o, v)),
        (hotness, lambda v: lib.hashkv_options_set_hotness(o, int(bool(v)))),
    ]
    for value, setter in setters:
        if value is not None:
            setter(value)
    return o


def _start(fn_name: str, devices, metadata_dir, options: dict) -> "DB":
    if isinstance(devices, (str, bytes, os.PathLike)):
        devices = [devices]
    paths = [os.fsencode(d) for d in devices]
    array = (ctypes.c_char_p * len(paths))(*paths)
    lib = _lib()
    opts = _options(**options)
    err = ctypes.c_void_p()
    try:
        db = getattr(lib, fn_name)(array, len(paths), os.fsencode(metadata_dir), opts,
                                   ctypes.byref(err))
        if not db:
            _raise(lib.hashkv_last_errcode(), err)
    finally:
        lib.hashkv_options_free(opts)
    return DB(db)


def format(devices, metadata_dir, **options) -> "DB":
    """Formats `devices` (a path or a list to stripe over) and `metadata_dir` and
    opens the new store. Options: mode ("hashkv", "vlog", "lsm"), main_segment_bytes,
    log_segment_bytes, reserved_share, write_cache_bytes, separation_threshold_bytes,
    sync_writes, force (overwrite devices holding data), create_device_bytes (create a
    missing device file of this size), memory_budget_bytes (one bound on the engine's
    memory, split between its caches; at least 8 MiB), value_cache_bytes, hotness
    (hot/cold separation, hashkv mode)."""
    return _start("hashkv_format", devices, metadata_dir, options)


def open(devices, metadata_dir, **options) -> "DB":  # noqa: A001 (shadows builtin)
    """Opens a formatted store. Mode and segment sizes come from the superblock; give
    them only to insist (a contradiction raises InvalidArgument)."""
    return _start("hashkv_open", devices, metadata_dir, options)


class WriteBatch:
    """An atomic group of puts and deletes, applied by DB.write."""

    def __init__(self, entries: Iterable[Tuple[bytes, Optional[bytes]]] = ()):
        self._lib = _lib()
        self._b = ctypes.c_void_p(self._lib.hashkv_writebatch_create())
        for key, value in entries:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def _handle(self) -> ctypes.c_void_p:
        if not self._b:
            raise InvalidArgument(E_INVALID_ARGUMENT, "the batch is destroyed")
        return self._b

    def put(self, key, value) -> "WriteBatch":
        k, v = _bytes(key, "key"), _bytes(value, "value")
        self._lib.hashkv_writebatch_put(self._handle(), k, len(k), v, len(v))
        return self

    def delete(self, key) -> "WriteBatch":
        k = _bytes(key, "key")
        self._lib.hashkv_writebatch_delete(self._handle(), k, len(k))
        return self

    def clear(self) -> None:
        self._lib.hashkv_writebatch_clear(self._handle())

    def __len__(self) -> int:
        return self._lib.hashkv_writebatch_count(self._handle())

    def destroy(self) -> None:
        """Frees the batch now (otherwise when it is garbage collected)."""
        if getattr(self, "_b", None):
            self._lib.hashkv_writebatch_destroy(self._b)
            self._b = ctypes.c_void_p()

    def __del__(self):
        self.destroy()


class Scan:
    """Pairs (key, value) of a key range in ascending order; an iterator. It is
    closed at its end, by close(), or when its DB closes."""

    def __init__(self, db: "DB", it: ctypes.c_void_p):
        self._db = db
        self._it = it

    def __iter__(self) -> "Scan":
        return self

    def __next__(self) -> Tuple[bytes, bytes]:
        if not self._it:
            raise StopIteration
        lib = self._db._lib
        k, v = ctypes.c_void_p(), ctypes.c_void_p()
        klen, vlen = ctypes.c_size_t(), ctypes.c_size_t()
        try:
            rc = _call(lib.hashkv_iter_next, self._it, ctypes.byref(k), ctypes.byref(klen),
                       ctypes.byref(v), ctypes.byref(vlen))
        except Error:
            self.close()
            raise
        if rc == 0:
            self.close()
            raise StopIteration
        try:
            return ctypes.string_at(k, klen.value), ctypes.string_at(v, vlen.value)
        finally:
            lib.hashkv_free(k)
            lib.hashkv_free(v)

    def close(self) -> None:
        if getattr(self, "_it", None):
            self._db._lib.hashkv_iter_free(self._it)
            self._it = ctypes.c_void_p()
            self._db._scans.discard(self)

    def __enter__(self) -> "Scan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


class DB:
    """An open store. Use format() or open() to get one; close it (or use `with`)."""

    def __init__(self, handle: int):
        self._lib = _lib()
        self._db = ctypes.c_void_p(handle)
        # Scans must be freed before their store closes: close() frees those left.
        self._scans = weakref.WeakSet()
        self._buffers = threading.local()

    def _handle(self) -> ctypes.c_void_p:
        if not self._db:
            raise InvalidArgument(E_INVALID_ARGUMENT, "the store is closed")
        return self._db

    def put(self, key, value, sync: bool = False) -> None:
        """Stores value under key; with sync=True durable on return."""
        k, v = _bytes(key, "key"), _bytes(value, "value")
        fn = self._lib.hashkv_put_sync if sync else self._lib.hashkv_put
        _call(fn, self._handle(), k, len(k), v, len(v))

    def delete(self, key, sync: bool = False) -> None:
        """Deletes key; with sync=True durable on return."""
        k = _bytes(key, "key")
        fn = self._lib.hashkv_delete_sync if sync else self._lib.hashkv_delete
        _call(fn, self._handle(), k, len(k))

    def get_into(self, key, buffer) -> Optional[int]:
        """Copies the value of key into `buffer` (writable bytes-like) and returns its
        length, or None if the key is absent. Raises BufferTooSmall (with .needed) when
        it does not fit; nothing is copied then."""
        k = _bytes(key, "key")
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("buffer must be writable")
        cbuf = (ctypes.c_char * len(view)).from_buffer(view) if len(view) else None
        length = ctypes.c_size_t()
        err = ctypes.c_void_p()
        rc = self._lib.hashkv_get_into(self._handle(), k, len(k), cbuf, len(view),
                                       ctypes.byref(length), ctypes.byref(err))
        if rc < 0:
            extra = {"needed": length.value} if rc == E_BUFFER_TOO_SMALL else {}
            _raise(rc, err, **extra)
        return length.value if rc == 1 else None

    def get(self, key) -> Optional[bytes]:
        """The value of key, or None."""
        buf = getattr(self._buffers, "buf", None)
        if buf is None:
            buf = self._buffers.buf = bytearray(_GET_BUFFER_BYTES_INITIAL)
        try:
            n = self.get_into(key, buf)
        except BufferTooSmall as e:
            buf = self._buffers.buf = bytearray(e.needed)
            n = self.get_into(key, buf)
        return None if n is None else bytes(memoryview(buf)[:n])

    def multi_get(self, keys: Sequence) -> List[Optional[bytes]]:
        """The values of `keys` in their order (None for a key with no value), read
        from the devices all at once."""
        ks = [_bytes(k, "key") for k in keys]
        n = len(ks)
        key_array = (ctypes.c_char_p * n)(*ks)
        lens = (ctypes.c_size_t * n)(*(len(k) for k in ks))
        values = (ctypes.c_void_p * n)()
        value_lens = (ctypes.c_size_t * n)()
        _call(self._lib.hashkv_multi_get, self._handle(), key_array, lens, n, values,
              value_lens)
        out: List[Optional[bytes]] = []
        try:
            for p, length in zip(values, value_lens):
                out.append(None if p is None else ctypes.string_at(p, length))
        finally:
            for p in values:
                if p is not None:
                    self._lib.hashkv_free(p)
        return out

    def write(self, batch: WriteBatch, sync: bool = False) -> None:
        """Applies the batch atomically; with sync=True durable on return."""
        _call(self._lib.hashkv_write, self._handle(), batch._handle(), int(bool(sync)))

    def scan(self, lower=None, upper=None, limit=None) -> Scan:
        """Keys in [lower, upper) in ascending order with their values; None bounds
        are unbounded. With a limit, at most that many pairs, and no value beyond them
        is read."""
        lo = None if lower is None else _bytes(lower, "lower")
        hi = None if upper is None else _bytes(upper, "upper")
        err = ctypes.c_void_p()
        if limit is None:
            it = self._lib.hashkv_scan(self._handle(), lo, len(lo or b""), hi,
                                       len(hi or b""), ctypes.byref(err))
        else:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise TypeError(f"limit must be an int, not {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit must be at least 0, not {limit}")
            it = self._lib.hashkv_scan_limit(self._handle(), lo, len(lo or b""), hi,
                                             len(hi or b""), limit, ctypes.byref(err))
        if not it:
            _raise(self._lib.hashkv_last_errcode(), err)
        scan = Scan(self, ctypes.c_void_p(it))
        self._scans.add(scan)
        return scan

    def flush(self) -> None:
        """Makes every earlier write durable."""
        _call(self._lib.hashkv_flush, self._handle())

    def check(self) -> None:
        """Checks the whole store (as hashkv fsck); raises Corruption with the report
        if it is damaged."""
        _call(self._lib.hashkv_check, self._handle())

    def stats(self) -> dict:
        s = Stats()
        _call(self._lib.hashkv_get_stats, self._handle(), ctypes.byref(s), ctypes.sizeof(s))
        return {name: getattr(s, name) for name, _ in Stats._fields_}

    def memory_usage(self) -> dict:
        """What the store holds in memory by use, in bytes (what memory_budget_bytes
        bounds)."""
        m = MemoryUsage()
        _call(self._lib.hashkv_get_memory_usage, self._handle(), ctypes.byref(m),
              ctypes.sizeof(m))
        return {name: getattr(m, name) for name, _ in MemoryUsage._fields_}

    def close(self) -> None:
        """Frees the store's open scans, flushes and closes. Closing twice is a no-op."""
        if not getattr(self, "_db", None):
            return
        for scan in list(self._scans):
            scan.close()
        handle, self._db = self._db, ctypes.c_void_p()
        _call(self._lib.hashkv_close, handle)

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # A store dropped without close() is closed here; a failing final flush can
        # only be reported by close() itself.
        try:
            self.close()
        except Error:
            pass
