#!/bin/sh
# make install and make uninstall, run from the top of the tree:
#   1. DESTDIR: every file where it belongs (soname links, an rpath-free
#      library with its soname, the header pair, handoff.pc for the prefix,
#      the static library, the supervisor, its units); uninstall removes all
#      of them and leaves a file that is not ours;
#   2. a PREFIX the dynamic linker does not search, no DESTDIR: install says
#      how to make the library found; uninstall leaves no file;
#   3. /usr/local (as root, when nothing of ours is there already): ldconfig
#      finds libhandoff.so.0 after install and not after uninstall.
set -u
WORK=$(mktemp -d /tmp/handoff-install-XXXXXX)
MAKE="make --no-print-directory -s"
STATUS=0

fail() { echo "FAIL install/uninstall: $*"; STATUS=1; }
ok() { echo "ok   $*"; }

# files_under DIR: every file and link below DIR, relative, sorted.
files_under() { (cd "$1" && find . ! -type d | sort); }

# check_tree ROOT PREFIX LIBDIR: what make install wrote for that prefix.
check_tree() {
    root=$1 prefix=$2 libdir=$3
    lib=$root$libdir
    for f in "$root$prefix/bin/handoff-supervisor" "$lib/libhandoff.so.$VERSION" "$lib/libhandoff.a" \
        "$root$prefix/include/handoff.h" "$root$prefix/include/handoff.hpp" "$lib/pkgconfig/handoff.pc" \
        "$root$prefix/lib/systemd/system/handoff-supervisor.service" \
        "$root$prefix/lib/systemd/system/handoff-supervisor.socket"; do
        [ -f "$f" ] || fail "make install did not write $f"
    done
    [ "$(readlink "$lib/libhandoff.so.0")" = "libhandoff.so.$VERSION" ] || fail "libhandoff.so.0 -> $(readlink "$lib/libhandoff.so.0")"
    [ "$(readlink "$lib/libhandoff.so")" = libhandoff.so.0 ] || fail "libhandoff.so -> $(readlink "$lib/libhandoff.so")"
    dyn=$(readelf -d "$lib/libhandoff.so.$VERSION")
    echo "$dyn" | grep -q 'Library soname: \[libhandoff.so.0\]' || fail "the installed library's soname is not libhandoff.so.0"
    echo "$dyn" | grep -Eq 'RPATH|RUNPATH' && fail "the installed library has an rpath: $(echo "$dyn" | grep -E 'RPATH|RUNPATH')"
    pc=$lib/pkgconfig/handoff.pc
    if ! { grep -qx "prefix=$prefix" "$pc" && grep -qx "libdir=$libdir" "$pc" &&
        grep -qx "includedir=$prefix/include" "$pc"; }; then
        fail "handoff.pc's directories are not the prefix's: $(head -3 "$pc" | tr '\n' ' ')"
    fi
    grep -q rpath "$pc" && fail "the installed handoff.pc adds an rpath"
    grep -qx "ExecStart=$prefix/bin/handoff-supervisor run --config /etc/handoff/kv.toml" \
        "$root$prefix/lib/systemd/system/handoff-supervisor.service" ||
        fail "the installed unit does not run $prefix/bin/handoff-supervisor"
}

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# 1. Into a DESTDIR.
DEST=$WORK/dest
$MAKE install DESTDIR="$DEST" >"$WORK/install1.log" 2>&1 || { cat "$WORK/install1.log"; fail "make install DESTDIR: exit $?"; }
grep -Eq 'ldconfig|not a directory the dynamic linker' "$WORK/install1.log" &&
    fail "make install into a DESTDIR went near the running system's linker: $(cat "$WORK/install1.log")"
check_tree "$DEST" /usr/local /usr/local/lib
installed=$(files_under "$DEST" | wc -l)
echo other >"$DEST/usr/local/lib/libother.so.1"
$MAKE uninstall DESTDIR="$DEST" >"$WORK/uninstall1.log" 2>&1 || { cat "$WORK/uninstall1.log"; fail "make uninstall DESTDIR: exit $?"; }
left=$(files_under "$DEST")
[ "$left" = ./usr/local/lib/libother.so.1 ] || fail "make uninstall left (or took) files: $left"
ok "make install DESTDIR=...: $installed files, soname links, no rpath; make uninstall removed exactly those"

# 2. A prefix the dynamic linker does not search, no DESTDIR.
PREFIX=$WORK/prefix
$MAKE install PREFIX="$PREFIX" >"$WORK/install2.log" 2>&1 || { cat "$WORK/install2.log"; fail "make install PREFIX: exit $?"; }
check_tree "" "$PREFIX" "$PREFIX/lib"
if ! { grep -q "^$PREFIX/lib is not a directory the dynamic linker searches" "$WORK/install2.log" &&
    grep -q "LD_LIBRARY_PATH=$PREFIX/lib" "$WORK/install2.log"; }; then
    fail "make install PREFIX=$PREFIX did not say the linker will not find the library: $(cat "$WORK/install2.log")"
fi
$MAKE uninstall PREFIX="$PREFIX" >"$WORK/uninstall2.log" 2>&1 || { cat "$WORK/uninstall2.log"; fail "make uninstall PREFIX: exit $?"; }
left=$(files_under "$PREFIX")
[ -z "$left" ] || fail "make uninstall PREFIX=$PREFIX left: $left"
ok "make install PREFIX=(not searched): the LD_LIBRARY_PATH / ld.so.conf.d message; make uninstall left nothing"

# 3. /usr/local: the linker cache.
if [ "$(id -u)" -ne 0 ]; then
    echo "skip /usr/local (ldconfig): not root"
elif ls /usr/local/lib/libhandoff* /usr/local/bin/handoff-supervisor /usr/local/include/handoff.h >/dev/null 2>&1; then
    fail "libhandoff is already installed in /usr/local: this test installs and uninstalls it there (run make uninstall first)"
else
    before=$(files_under /usr/local)
    trap '$MAKE uninstall >/dev/null 2>&1; exit 1' INT TERM
    $MAKE install >"$WORK/install3.log" 2>&1 || { cat "$WORK/install3.log"; fail "make install: exit $?"; }
    ldconfig -p | grep -q 'libhandoff.so.0 (.*) => /usr/local/lib/libhandoff.so.0$' ||
        fail "after make install the linker cache has no /usr/local/lib/libhandoff.so.0: $(cat "$WORK/install3.log")"
    $MAKE uninstall >"$WORK/uninstall3.log" 2>&1 || { cat "$WORK/uninstall3.log"; fail "make uninstall: exit $?"; }
    ldconfig -p | grep -q libhandoff && fail "after make uninstall the linker cache still has $(ldconfig -p | grep libhandoff)"
    trap - INT TERM
    [ "$(files_under /usr/local)" = "$before" ] || fail "make uninstall did not leave /usr/local as it was"
    ok "make install (/usr/local): ldconfig finds libhandoff.so.0; make uninstall: gone, /usr/local as before"
fi

if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
exit $STATUS
