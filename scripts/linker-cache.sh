#!/bin/sh
# Usage: linker-cache.sh LIBDIR installed|uninstalled
# Run by `make install` / `make uninstall` into the running system (no
# DESTDIR): refreshes the dynamic linker's cache when LIBDIR is a directory
# it searches (ld.so.conf, ld.so.conf.d, the built-in ones), and otherwise
# says how to make programs find libhandoff.so.0.
set -eu
libdir=$1
what=$2
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
target=$(realpath -m "$libdir")

# ldconfig -v lists each directory it searches as "DIR: (from ...)";
# -N -X: read only, neither the cache nor the links are touched.
searched=no
for dir in $("$ldconfig" -v -N -X 2>/dev/null | sed -n 's|^\(/[^:]*\):.*|\1|p'); do
    if [ "$(realpath -m "$dir")" = "$target" ]; then
        searched=yes
        break
    fi
done

if [ $searched = yes ]; then
    if "$ldconfig"; then
        echo "ldconfig: the linker cache is up to date for $libdir"
    else
        echo "ldconfig failed: run it as root so that programs find libhandoff.so.0 in $libdir" >&2
        exit 1
    fi
elif [ "$what" = installed ]; then
    cat <<MSG
$libdir is not a directory the dynamic linker searches: programs linked
with -lhandoff will not find libhandoff.so.0 there. Either add it for every
program (as root):
    echo $libdir > /etc/ld.so.conf.d/handoff.conf && ldconfig
or for one shell:
    export LD_LIBRARY_PATH=$libdir
MSG
fi
