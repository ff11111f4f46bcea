#!/usr/bin/env bash
# The Debian packages as a user gets them (tests/deb/packages.sh DEB_DIR
# VERSION, run by `make test-deb` after `make deb`):
#   1. libhandoff0, libhandoff-dev and handoff-supervisor installed with apt
#      (they must not be installed already: the test purges them);
#   2. with PKG_CONFIG_PATH unset, pkg-config finds the installed handoff.pc;
#      kv-c (examples/c) built with `cc $(pkg-config --cflags --libs
#      handoff)` records libhandoff.so.0, has no rpath, and ldd resolves it
#      in /usr/lib; kv-c linked with the static library needs no
#      libhandoff.so at all; a C++17 service (tests/cpp/hpp_service.cpp)
#      finds handoff.hpp through handoff.pc;
#   3. /usr/bin/handoff-supervisor runs the shared kv-c and hands it off to
#      the static one: committed, a new pid serves, the write before the
#      handoff is read after it;
#   4. the packages purged: no file of theirs, no libhandoff in the linker
#      cache.
set -u
DEB_DIR=$(realpath "$1")
VERSION=$2
PACKAGES=(libhandoff0 libhandoff-dev handoff-supervisor)
TOP=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/handoff-deb-XXXXXX)
SUP_PID=
INSTALLED=

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi

purge() {
    $SUDO dpkg --purge "${PACKAGES[@]}" >"$WORK/purge.log" 2>&1
}

# To stderr: it also runs inside $(...).
fail() {
    exec 1>&2
    echo "FAIL Debian packages: $*"
    [ -f "$WORK/supervisor.log" ] && { echo "--- supervisor"; tail -20 "$WORK/supervisor.log"; }
    [ -n "$SUP_PID" ] && kill "$SUP_PID" 2>/dev/null && wait "$SUP_PID" 2>/dev/null
    [ -n "$INSTALLED" ] && purge
    rm -rf "$WORK"
    exit 1
}
ok() { echo "ok   $*"; }
trap 'fail "interrupted"' INT TERM

# kv LINE: one request to the service, its one-line answer on stdout.
kv() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf '%s\n' "$1" >&3
    local reply=
    read -r -t 5 reply <&3
    exec 3<&-
    printf '%s\n' "$reply"
}

# 1. Install.
for p in "${PACKAGES[@]}"; do
    deb=("$DEB_DIR/${p}_${VERSION}"_*.deb)
    [ -f "${deb[0]}" ] || fail "no ${p}_${VERSION} package in $DEB_DIR (run make deb)"
    DEBS+=("${deb[0]}")
    state=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
    case $state in
        '' | not-installed | config-files) ;;
        *) fail "$p is already $state: this test installs and purges it (dpkg --purge ${PACKAGES[*]} first)" ;;
    esac
done
INSTALLED=yes
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${DEBS[@]}" \
    >"$WORK/apt.log" 2>&1 || fail "apt-get install: $(tail -5 "$WORK/apt.log")"
for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p")" = installed ] || fail "$p is not installed after apt-get install"
done
ok "apt-get install ${DEBS[*]##*/}"

# 2. Build against the installed files only.
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR LD_LIBRARY_PATH
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
LIBDIR=/usr/lib/$MULTIARCH
[ "$(pkg-config --modversion handoff 2>&1)" = "$VERSION" ] || fail "pkg-config --modversion handoff: $(pkg-config --modversion handoff 2>&1)"
[ "$(pkg-config --variable=libdir handoff)" = "$LIBDIR" ] || fail "handoff.pc's libdir is $(pkg-config --variable=libdir handoff)"
CFLAGS_LIBS="$(pkg-config --cflags --libs handoff)"
case $CFLAGS_LIBS in *"$TOP"* | *rpath*) fail "pkg-config points into the tree or adds an rpath: $CFLAGS_LIBS" ;; esac

KV_SRCS=("$TOP"/examples/c/kv.c "$TOP"/examples/c/kvlog.c "$TOP"/examples/c/kvmap.c)
# shellcheck disable=SC2086 # pkg-config's words are separate arguments
cc -std=c99 -O2 "${KV_SRCS[@]}" $CFLAGS_LIBS -o "$WORK/kv-c" 2>"$WORK/cc.log" ||
    fail "cc kv-c with pkg-config: $(cat "$WORK/cc.log")"
dyn=$(readelf -d "$WORK/kv-c")
grep -q 'Shared library: \[libhandoff.so.0\]' <<<"$dyn" || fail "kv-c does not record libhandoff.so.0: $(grep NEEDED <<<"$dyn")"
grep -Eq 'RPATH|RUNPATH' <<<"$dyn" && fail "kv-c has an rpath: $(grep -E 'RPATH|RUNPATH' <<<"$dyn")"
resolved=$(ldd "$WORK/kv-c" | sed -n 's/^\s*libhandoff.so.0 => \(\S*\) .*/\1/p')
if [ -z "$resolved" ] || [ "$(realpath "$resolved")" != "$(realpath "$LIBDIR/libhandoff.so.$VERSION")" ]; then
    fail "ldd kv-c: libhandoff.so.0 => '${resolved:-not found}', not $LIBDIR: $(ldd "$WORK/kv-c")"
fi
ok "kv-c built with pkg-config alone: NEEDED libhandoff.so.0, no rpath, ldd: libhandoff.so.0 => $resolved"

STATIC_LIBS=$(pkg-config --static --libs handoff | sed 's/-lhandoff\b/-Wl,-Bstatic -lhandoff -Wl,-Bdynamic/')
# shellcheck disable=SC2046,SC2086
cc -std=c99 -O2 "${KV_SRCS[@]}" $(pkg-config --cflags handoff) $STATIC_LIBS -o "$WORK/kv-c-static" 2>"$WORK/cc-static.log" ||
    fail "cc kv-c with the static library ($STATIC_LIBS): $(cat "$WORK/cc-static.log")"
ldd "$WORK/kv-c-static" | grep -q libhandoff && fail "kv-c-static still needs libhandoff.so: $(ldd "$WORK/kv-c-static")"
ok "kv-c linked with libhandoff.a (pkg-config --static: $STATIC_LIBS): no libhandoff.so needed"

# shellcheck disable=SC2086
c++ -std=c++17 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "$TOP/tests/cpp/hpp_service.cpp" $CFLAGS_LIBS \
    -o "$WORK/hpp_service" 2>"$WORK/cxx.log" || fail "c++ hpp_service with pkg-config: $(cat "$WORK/cxx.log")"
ok "a C++17 service built with handoff.hpp found through handoff.pc"

# 3. A handoff under the installed supervisor: shared kv-c -> static kv-c.
for unit in handoff-supervisor.service handoff-supervisor.socket; do
    [ -f /lib/systemd/system/$unit ] || fail "$unit is not in /lib/systemd/system"
done
grep -q '^ExecStart=/usr/bin/handoff-supervisor run ' /lib/systemd/system/handoff-supervisor.service ||
    fail "the packaged unit does not run /usr/bin/handoff-supervisor: $(grep ExecStart /lib/systemd/system/handoff-supervisor.service)"
SUPERVISOR=/usr/bin/handoff-supervisor
CONFIG=$WORK/kv.toml
for _ in 1 2 3 4 5; do
    PORT=$((20000 + RANDOM % 20000))
    cat >"$CONFIG" <<TOML
[service]
binary = "$WORK/kv-c"
args = ["--data-dir", "$WORK/data", "--control-socket", "$WORK/control.sock"]
control_socket = "$WORK/control.sock"
trigger_socket = "$WORK/trigger.sock"
journal = "$WORK/handoff/state.bin"
data_dir = "$WORK/data"

[[listener]]
name = "kv"
address = "tcp://127.0.0.1:$PORT"

[timeouts]
deadline_secs = 10

[restart]
policy = "never"
TOML
    "$SUPERVISOR" run --config "$CONFIG" >"$WORK/supervisor.log" 2>&1 &
    SUP_PID=$!
    for _ in $(seq 100); do
        [[ $(kv PING 2>/dev/null) == PONG* ]] && break
        kill -0 "$SUP_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$SUP_PID" 2>/dev/null && break
    wait "$SUP_PID"
    SUP_PID=
    grep -q 'in use' "$WORK/supervisor.log" || fail "$SUPERVISOR run exited"
done
[ -n "$SUP_PID" ] || fail "no free port in 5 tries"
# serving_pid: the pid PING names, which must be a child of our supervisor
# (not some other service on that port).
serving_pid() {
    local pong pid
    pong=$(kv PING)
    [[ $pong == PONG* ]] || fail "the service does not answer PING: '$pong'"
    pid=${pong#PONG }
    pid=${pid%% *}
    [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$SUP_PID" ] || fail "'$pong' on port $PORT is not our supervisor's child"
    echo "$pid"
}
before=$(serving_pid) || exit 1
[[ $(kv "SET debian packaged") == OK* ]] || fail "SET before the handoff"
"$SUPERVISOR" trigger --config "$CONFIG" --binary "$WORK/kv-c-static" >"$WORK/trigger.log" 2>&1 ||
    fail "trigger: exit $? ($(tail -3 "$WORK/trigger.log"))"
grep -q '^committed in ' "$WORK/trigger.log" || fail "trigger did not commit: $(cat "$WORK/trigger.log")"
after=$(serving_pid) || exit 1
[ "$after" != "$before" ] || fail "after the handoff pid $before still serves"
[ "$(kv "GET debian")" = "VALUE packaged" ] || fail "the write before the handoff is lost: GET answers '$(kv "GET debian")'"
kill -TERM "$SUP_PID"
wait "$SUP_PID"
rc=$?
SUP_PID=
[ $rc -eq 0 ] || fail "$SUPERVISOR exited $rc on SIGTERM"
ok "$SUPERVISOR handed kv-c off to kv-c-static: committed (pid $before -> $after), the write kept"

# 4. Purge.
purge || fail "dpkg --purge: $(tail -5 "$WORK/purge.log")"
INSTALLED=
for p in "${PACKAGES[@]}"; do
    state=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
    [ -z "$state" ] || [ "$state" = not-installed ] || fail "$p is $state after the purge"
done
ls "$LIBDIR"/libhandoff* /usr/include/handoff.h* /usr/bin/handoff-supervisor \
    /lib/systemd/system/handoff-supervisor.* 2>/dev/null && fail "files left after the purge"
ldconfig -p | grep -q libhandoff && fail "the linker cache still has $(ldconfig -p | grep libhandoff)"
ok "dpkg --purge: no file left, libhandoff gone from the linker cache"
rm -rf "$WORK"
