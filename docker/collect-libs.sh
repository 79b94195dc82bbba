#!/bin/sh
# collect-libs.sh OUT BINARY... — copies the binaries to OUT/bin and every shared library they
# load, except the C library's own (libc, libm, ld-linux, ...: the runtime base provides those,
# glibc >= 2.36), to OUT/lib. The runtime image then needs nothing installed.
set -eu
out="$1"
shift
mkdir -p "${out}/bin" "${out}/lib"
for binary in "$@"; do
  cp "${binary}" "${out}/bin/"
  ldd "${binary}" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "${lib}")" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libresolv.so.*) ;;
      *) cp -L "${lib}" "${out}/lib/" ;;
    esac
  done
done
