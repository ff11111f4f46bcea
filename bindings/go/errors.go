package handoff

/*
#include <handoff.h>
*/
import "C"

import "fmt"

// Status is a handoff_status: 0 for success, each failure its own stable
// value (never renumbered or reused).
type Status int32

// The statuses of include/handoff.h.
const (
	StatusOK                = Status(C.HANDOFF_OK)
	StatusInvalidArgument   = Status(C.HANDOFF_ERR_INVALID_ARGUMENT)
	StatusNullPointer       = Status(C.HANDOFF_ERR_NULL_POINTER)
	StatusPanic             = Status(C.HANDOFF_ERR_PANIC)
	StatusInvalidUTF8       = Status(C.HANDOFF_ERR_INVALID_UTF8)
	StatusIncomplete        = Status(C.HANDOFF_ERR_INCOMPLETE)
	StatusBufferTooSmall    = Status(C.HANDOFF_ERR_BUFFER_TOO_SMALL)
	StatusFrameMalformed    = Status(C.HANDOFF_ERR_FRAME_MALFORMED)
	StatusFrameTooLarge     = Status(C.HANDOFF_ERR_FRAME_TOO_LARGE)
	StatusUnknownMessage    = Status(C.HANDOFF_ERR_UNKNOWN_MESSAGE)
	StatusDecode            = Status(C.HANDOFF_ERR_DECODE)
	StatusEncode            = Status(C.HANDOFF_ERR_ENCODE)
	StatusVersionMismatch   = Status(C.HANDOFF_ERR_VERSION_MISMATCH)
	StatusNoSuchField       = Status(C.HANDOFF_ERR_NO_SUCH_FIELD)
	StatusWrongFieldType    = Status(C.HANDOFF_ERR_WRONG_FIELD_TYPE)
	StatusOutOfRange        = Status(C.HANDOFF_ERR_OUT_OF_RANGE)
	StatusIO                = Status(C.HANDOFF_ERR_IO)
	StatusJournalCorrupt    = Status(C.HANDOFF_ERR_JOURNAL_CORRUPT)
	StatusPeerClosed        = Status(C.HANDOFF_ERR_PEER_CLOSED)
	StatusTimeout           = Status(C.HANDOFF_ERR_TIMEOUT)
	StatusLockHeld          = Status(C.HANDOFF_ERR_LOCK_HELD)
	StatusListener          = Status(C.HANDOFF_ERR_LISTENER)
	StatusEnvironment       = Status(C.HANDOFF_ERR_ENVIRONMENT)
	StatusProtocol          = Status(C.HANDOFF_ERR_PROTOCOL)
	StatusHandoffInProgress = Status(C.HANDOFF_ERR_HANDOFF_IN_PROGRESS)
	StatusAborted           = Status(C.HANDOFF_ERR_ABORTED)
	StatusPermissionDenied  = Status(C.HANDOFF_ERR_PERMISSION_DENIED)
	StatusPeerIdentity      = Status(C.HANDOFF_ERR_PEER_IDENTITY)
	StatusHookFailed        = Status(C.HANDOFF_ERR_HOOK_FAILED)
	StatusWrongState        = Status(C.HANDOFF_ERR_WRONG_STATE)
)

// String is the constant's name in the header ("HANDOFF_ERR_IO").
func (s Status) String() string {
	name := C.handoff_status_name(C.int32_t(s))
	if name == nil {
		return fmt.Sprintf("handoff status %d", int32(s))
	}
	return C.GoString(name)
}

// Error is a failure the library (or this binding) reported: its status
// and the library's message. errors.Is(err, ErrLockHeld) and the like
// compare the status.
type Error struct {
	Status  Status
	Message string
}

func newError(status Status, message string) *Error {
	return &Error{Status: status, Message: message}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "handoff: " + e.Status.String()
	}
	return "handoff: " + e.Message + " (" + e.Status.String() + ")"
}

// Is reports whether target is an *Error (a sentinel or not) of the same
// status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// One sentinel per failure status, for errors.Is. They carry no message;
// the errors returned by the functions do.
var (
	ErrInvalidArgument   = &Error{Status: StatusInvalidArgument}
	ErrNullPointer       = &Error{Status: StatusNullPointer}
	ErrPanic             = &Error{Status: StatusPanic}
	ErrInvalidUTF8       = &Error{Status: StatusInvalidUTF8}
	ErrIncomplete        = &Error{Status: StatusIncomplete}
	ErrBufferTooSmall    = &Error{Status: StatusBufferTooSmall}
	ErrFrameMalformed    = &Error{Status: StatusFrameMalformed}
	ErrFrameTooLarge     = &Error{Status: StatusFrameTooLarge}
	ErrUnknownMessage    = &Error{Status: StatusUnknownMessage}
	ErrDecode            = &Error{Status: StatusDecode}
	ErrEncode            = &Error{Status: StatusEncode}
	ErrVersionMismatch   = &Error{Status: StatusVersionMismatch}
	ErrNoSuchField       = &Error{Status: StatusNoSuchField}
	ErrWrongFieldType    = &Error{Status: StatusWrongFieldType}
	ErrOutOfRange        = &Error{Status: StatusOutOfRange}
	ErrIO                = &Error{Status: StatusIO}
	ErrJournalCorrupt    = &Error{Status: StatusJournalCorrupt}
	ErrPeerClosed        = &Error{Status: StatusPeerClosed}
	ErrTimeout           = &Error{Status: StatusTimeout}
	ErrLockHeld          = &Error{Status: StatusLockHeld}
	ErrListener          = &Error{Status: StatusListener}
	ErrEnvironment       = &Error{Status: StatusEnvironment}
	ErrProtocol          = &Error{Status: StatusProtocol}
	ErrHandoffInProgress = &Error{Status: StatusHandoffInProgress}
	ErrAborted           = &Error{Status: StatusAborted}
	ErrPermissionDenied  = &Error{Status: StatusPermissionDenied}
	ErrPeerIdentity      = &Error{Status: StatusPeerIdentity}
	ErrHookFailed        = &Error{Status: StatusHookFailed}
	ErrWrongState        = &Error{Status: StatusWrongState}
)
