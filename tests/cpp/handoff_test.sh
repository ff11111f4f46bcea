#!/bin/sh
# A real handoff of hpp_service (handoff.hpp) under handoff-supervisor:
#   1. cold start (callback form);
#   2. a trigger whose seal throws a C++ exception: rolled back (exit 1),
#      the incumbent resumes and serves on, the successor gives up;
#   3. a trigger that commits: the successor serves with the loop form;
#   4. a trigger from the loop form to a new successor: committed;
#   5. a trigger whose loop seal throws (the handoff::request destroyed
#      uncompleted): rolled back, resumed; then one that commits.
#   handoff_test.sh SERVICE SUPERVISOR
set -u
SERVICE=$1
SUPERVISOR=$2
WORK=$(mktemp -d /tmp/handoff-hpp-run-XXXXXX)
EVENTS=$WORK/events.log
FAIL=$WORK/fail-seal
SUP_PID=
# A sanitizer build of the service reports into files here, checked at the end.
ASAN_OPTIONS="log_path=$WORK/asan:${ASAN_OPTIONS:-}"
export ASAN_OPTIONS
UBSAN_OPTIONS="log_path=$WORK/ubsan:${UBSAN_OPTIONS:-}"
export UBSAN_OPTIONS

fail() {
    echo "FAIL handoff test: $*"
    echo "--- events"; cat "$EVENTS" 2>/dev/null
    echo "--- supervisor"; tail -30 "$WORK/supervisor.log" 2>/dev/null
    [ -n "$SUP_PID" ] && kill "$SUP_PID" 2>/dev/null && wait "$SUP_PID" 2>/dev/null
    exit 1
}

# wait_for PATTERN: a line of the events log matching it, within 10 s.
wait_for() {
    i=0
    while ! grep -q "$1" "$EVENTS" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 200 ] && fail "no event matching '$1'"
        sleep 0.05
    done
}

cat >"$WORK/hpp.toml" <<TOML
[service]
binary = "$SERVICE"
args = ["--data-dir", "$WORK/data", "--control-socket", "$WORK/control.sock", "--events", "$EVENTS", "--fail-seal-file", "$FAIL"]
control_socket = "$WORK/control.sock"
trigger_socket = "$WORK/trigger.sock"
journal = "$WORK/state.bin"
data_dir = "$WORK/data"

[[listener]]
name = "t"
address = "unix:$WORK/t.sock"

[timeouts]
deadline_secs = 10

[restart]
policy = "never"
TOML

"$SUPERVISOR" run --config "$WORK/hpp.toml" >"$WORK/supervisor.log" 2>&1 &
SUP_PID=$!
wait_for '^serving callbacks 1 '

touch "$FAIL"
"$SUPERVISOR" trigger --config "$WORK/hpp.toml" >"$WORK/trigger1.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "trigger with a throwing seal: exit $rc, expected 1 (rolled back)"
grep -q 'seal refused while' "$WORK/trigger1.log" "$WORK/supervisor.log" ||
    fail "the exception's what() did not reach the supervisor"
wait_for '^seal-throws 1$'
wait_for '^resume 1$'
rm -f "$FAIL"
echo "ok   a seal callback's exception became handoff_hook_fail: rolled back, resumed"

"$SUPERVISOR" trigger --config "$WORK/hpp.toml" >"$WORK/trigger2.log" 2>&1 ||
    fail "trigger 2: exit $? (see $WORK/trigger2.log: $(tail -3 "$WORK/trigger2.log"))"
wait_for '^ended 1 committed$'
wait_for '^serving loop 2 '
echo "ok   callback form -> loop form: committed, generation 2 serves"

"$SUPERVISOR" trigger --config "$WORK/hpp.toml" >"$WORK/trigger3.log" 2>&1 ||
    fail "trigger 3: exit $? (see $WORK/trigger3.log: $(tail -3 "$WORK/trigger3.log"))"
wait_for '^ended 2 committed$'
wait_for '^serving loop 3 '
grep -q '^seal 2$' "$EVENTS" || fail "generation 2's loop saw no seal"
grep -q '^adopted none$' "$EVENTS" || fail "generation 2 should have adopted nothing (the callback form moves nothing)"
grep -q '^drain 2 moves$' "$EVENTS" || fail "generation 2's drain did not move (protocol v2)"
grep -q '^adopted memo from gen 2$' "$EVENTS" || fail "generation 3 did not adopt generation 2's memfd"
grep -q '^error' "$EVENTS" && fail "a generation reported an error"
echo "ok   loop form -> loop form: committed, a memfd moved (protocol v2), generation 3 serves"

touch "$FAIL"
"$SUPERVISOR" trigger --config "$WORK/hpp.toml" >"$WORK/trigger4.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "trigger with a throwing loop seal: exit $rc, expected 1 (rolled back)"
grep -q 'request dropped uncompleted' "$WORK/trigger4.log" ||
    fail "the dropped request's reason did not reach the supervisor: $(tail -1 "$WORK/trigger4.log")"
wait_for '^seal-throws 3$'
wait_for '^loop-caught loop seal refused$'
wait_for '^resume 3$'
rm -f "$FAIL"
"$SUPERVISOR" trigger --config "$WORK/hpp.toml" >"$WORK/trigger5.log" 2>&1 ||
    fail "trigger 5: exit $? (see $WORK/trigger5.log: $(tail -3 "$WORK/trigger5.log"))"
wait_for '^ended 3 committed$'
wait_for '^serving loop 4 '
grep -q '^adopted memo from gen 3$' "$EVENTS" || fail "generation 4 did not adopt the memfd generation 3 kept through the rollback"
echo "ok   a loop request destroyed uncompleted failed the handoff (rolled back, resumed); the next one committed"

kill "$SUP_PID"
wait "$SUP_PID" 2>/dev/null
SUP_PID=
for f in "$WORK"/asan.* "$WORK"/ubsan.*; do
    [ -e "$f" ] && { cat "$f"; fail "a sanitizer report: $f"; }
done
[ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
exit 0
