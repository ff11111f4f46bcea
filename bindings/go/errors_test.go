package handoff

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Every status of the header, by constant name, with its exported Go
// sentinel: a status the header gains without a sentinel here fails.
var sentinelsByName = map[string]*Error{
	"HANDOFF_ERR_INVALID_ARGUMENT":    ErrInvalidArgument,
	"HANDOFF_ERR_NULL_POINTER":        ErrNullPointer,
	"HANDOFF_ERR_PANIC":               ErrPanic,
	"HANDOFF_ERR_INVALID_UTF8":        ErrInvalidUTF8,
	"HANDOFF_ERR_INCOMPLETE":          ErrIncomplete,
	"HANDOFF_ERR_BUFFER_TOO_SMALL":    ErrBufferTooSmall,
	"HANDOFF_ERR_FRAME_MALFORMED":     ErrFrameMalformed,
	"HANDOFF_ERR_FRAME_TOO_LARGE":     ErrFrameTooLarge,
	"HANDOFF_ERR_UNKNOWN_MESSAGE":     ErrUnknownMessage,
	"HANDOFF_ERR_DECODE":              ErrDecode,
	"HANDOFF_ERR_ENCODE":              ErrEncode,
	"HANDOFF_ERR_VERSION_MISMATCH":    ErrVersionMismatch,
	"HANDOFF_ERR_NO_SUCH_FIELD":       ErrNoSuchField,
	"HANDOFF_ERR_WRONG_FIELD_TYPE":    ErrWrongFieldType,
	"HANDOFF_ERR_OUT_OF_RANGE":        ErrOutOfRange,
	"HANDOFF_ERR_IO":                  ErrIO,
	"HANDOFF_ERR_JOURNAL_CORRUPT":     ErrJournalCorrupt,
	"HANDOFF_ERR_PEER_CLOSED":         ErrPeerClosed,
	"HANDOFF_ERR_TIMEOUT":             ErrTimeout,
	"HANDOFF_ERR_LOCK_HELD":           ErrLockHeld,
	"HANDOFF_ERR_LISTENER":            ErrListener,
	"HANDOFF_ERR_ENVIRONMENT":         ErrEnvironment,
	"HANDOFF_ERR_PROTOCOL":            ErrProtocol,
	"HANDOFF_ERR_HANDOFF_IN_PROGRESS": ErrHandoffInProgress,
	"HANDOFF_ERR_ABORTED":             ErrAborted,
	"HANDOFF_ERR_PERMISSION_DENIED":   ErrPermissionDenied,
	"HANDOFF_ERR_PEER_IDENTITY":       ErrPeerIdentity,
	"HANDOFF_ERR_HOOK_FAILED":         ErrHookFailed,
	"HANDOFF_ERR_WRONG_STATE":         ErrWrongState,
}

func readHeader(t *testing.T) string {
	header, err := os.ReadFile(filepath.Join(repoRoot(t), "include", "handoff.h"))
	if err != nil {
		t.Fatal(err)
	}
	return string(header)
}

func TestOneSentinelPerHeaderStatus(t *testing.T) {
	statuses := regexp.MustCompile(`(?m)^\s*(HANDOFF_(?:OK|ERR_\w+)) = (\d+),`).
		FindAllStringSubmatch(readHeader(t), -1)
	if len(statuses) < 30 {
		t.Fatalf("found only %d statuses in the header", len(statuses))
	}
	seen := map[string]bool{}
	for _, m := range statuses {
		name := m[1]
		value, _ := strconv.Atoi(m[2])
		if got := Status(value).String(); got != name {
			t.Errorf("Status(%d).String() = %q, want %q", value, got, name)
		}
		if name == "HANDOFF_OK" {
			continue
		}
		seen[name] = true
		sentinel, ok := sentinelsByName[name]
		if !ok {
			t.Errorf("no Go sentinel for %s", name)
			continue
		}
		if int(sentinel.Status) != value {
			t.Errorf("the sentinel for %s has status %d, want %d", name, sentinel.Status, value)
		}
		// A library error of that status matches its sentinel, and no other.
		err := error(newError(Status(value), "details"))
		wrapped := fmt.Errorf("context: %w", err)
		if !errors.Is(wrapped, sentinel) {
			t.Errorf("errors.Is(%v, sentinel of %s) is false", wrapped, name)
		}
		for other, s := range sentinelsByName {
			if other != name && errors.Is(err, s) {
				t.Errorf("an error of %s matches the sentinel of %s", name, other)
			}
		}
	}
	for name := range sentinelsByName {
		if !seen[name] {
			t.Errorf("the sentinel of %s has no status in the header", name)
		}
	}
	if Status(9999).String() != "handoff status 9999" {
		t.Errorf("unknown status: %q", Status(9999).String())
	}
}

func TestErrorsCarryTheLibrarysMessage(t *testing.T) {
	_, _, err := Decode([]byte{1, 0, 0, 0, 1, 0, 0})
	if !errors.Is(err, ErrFrameMalformed) {
		t.Fatalf("a frame length of 1: %v, want ErrFrameMalformed", err)
	}
	var herr *Error
	if !errors.As(err, &herr) || herr.Message == "" || herr.Status != StatusFrameMalformed {
		t.Fatalf("no message from the library: %#v", err)
	}
	if !strings.Contains(err.Error(), herr.Message) || !strings.Contains(err.Error(), "HANDOFF_ERR_FRAME_MALFORMED") {
		t.Errorf("Error() = %q lacks the message or the status", err.Error())
	}
	if errors.Is(err, errors.New("other")) {
		t.Error("matches an unrelated error")
	}
}

// The functions the binding reaches by other means, and why.
var builtFromOthers = map[string]string{
	"handoff_successor_wait_for_begin": "WaitForBegin waits on handoff_successor_control_fd " +
		"in Go's netpoller and reads with handoff_successor_poll_begin (as the library's own " +
		"wait does), so that its context cancels it",
}

// Every function of the C ABI is reached from the binding (thin: the whole
// ABI, nothing more).
func TestEveryCFunctionIsBound(t *testing.T) {
	functions := regexp.MustCompile(`(?m)\b(handoff_\w+)\(`).FindAllStringSubmatch(readHeader(t), -1)
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var code strings.Builder
	for _, file := range sources {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		code.Write(b)
	}
	var missing []string
	seen := map[string]bool{}
	for _, m := range functions {
		name := m[1]
		if seen[name] {
			continue
		}
		seen[name] = true
		called := strings.Contains(code.String(), "C."+name+"(")
		if _, other := builtFromOthers[name]; other && called {
			t.Errorf("%s is called after all: drop it from builtFromOthers", name)
		} else if !other && !called {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(seen) < 80 {
		t.Fatalf("found only %d functions in the header", len(seen))
	}
	if len(missing) > 0 {
		t.Errorf("functions of include/handoff.h the binding never calls: %v", missing)
	}
}

func TestVersion(t *testing.T) {
	if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(Version()) {
		t.Errorf("Version() = %q", Version())
	}
}
