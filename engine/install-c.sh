#!/usr/bin/env bash
# Installs hashkv's C library as a C library is usually laid out:
#   LIBDIR/libhashkv.so.VERSION, the SONAME link to it, the libhashkv.so dev link,
#   LIBDIR/libhashkv.a, INCLUDEDIR/hashkv.h, LIBDIR/pkgconfig/hashkv.pc
# so that programs build with `cc app.c $(pkg-config --cflags --libs hashkv)`.
#
# Build first:  cargo build --release -p hashkv
# Then:         engine/install-c.sh [--prefix DIR] [--libdir DIR] [--from DIR]
#   --prefix DIR  where to install (default /usr/local)
#   --libdir DIR  the library directory (default PREFIX/lib)
#   --from DIR    where cargo put the built libraries (default
#                 ${CARGO_TARGET_DIR:-<workspace>/target}/release)
#   DESTDIR       prepended to every path written, for staged installs (packaging);
#                 the .pc file still names the final PREFIX.
# The SONAME is read from the built library (engine/build.rs sets it).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(dirname "$here")"
prefix=/usr/local
libdir=
from="${CARGO_TARGET_DIR:-$workspace/target}/release"

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --libdir) libdir="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install-c.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
libdir="${libdir:-$prefix/lib}"
includedir="$prefix/include"
destdir="${DESTDIR:-}"

so="$from/libhashkv.so"
a="$from/libhashkv.a"
for f in "$so" "$a" "$here/include/hashkv.h"; do
  if [ ! -f "$f" ]; then
    echo "install-c.sh: $f is missing; run: cargo build --release -p hashkv" >&2
    exit 1
  fi
done

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$workspace/Cargo.toml" | head -n 1)"
if [ -z "$version" ]; then
  echo "install-c.sh: no version found in $workspace/Cargo.toml" >&2
  exit 1
fi
if ! command -v readelf >/dev/null; then
  echo "install-c.sh: readelf (binutils) is needed to read the library's SONAME" >&2
  exit 1
fi
soname="$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
if [ -z "$soname" ]; then
  echo "install-c.sh: $so has no SONAME (was it built without engine/build.rs?)" >&2
  exit 1
fi

install -d "$destdir$libdir/pkgconfig" "$destdir$includedir"
install -m 0755 "$so" "$destdir$libdir/libhashkv.so.$version"
ln -sfn "libhashkv.so.$version" "$destdir$libdir/$soname"
ln -sfn "$soname" "$destdir$libdir/libhashkv.so"
install -m 0644 "$a" "$destdir$libdir/libhashkv.a"
install -m 0644 "$here/include/hashkv.h" "$destdir$includedir/hashkv.h"

# Libs.private: the system libraries the Rust standard library needs when linking
# libhashkv.a (what `rustc --print native-static-libs` reports for this crate on
# Linux); `pkg-config --static --libs hashkv` adds them.
cat > "$destdir$libdir/pkgconfig/hashkv.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=$libdir
includedir=$includedir

Name: hashkv
Description: Key-value store for update-heavy workloads on NVMe (HashKV), C API
Version: $version
Libs: -L\${libdir} -lhashkv
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
EOF

echo "installed libhashkv $version (SONAME $soname) under $destdir$prefix"
case ":${LD_LIBRARY_PATH:-}:" in
  *":$libdir:"*) ;;
  *) echo "if $libdir is not searched by the dynamic loader, run ldconfig (as root) or set LD_LIBRARY_PATH" ;;
esac
