package handoff

/*
#include <handoff.h>
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// LogLevel is an event's level (HANDOFF_LOG_*).
type LogLevel uint32

const (
	LogError = LogLevel(C.HANDOFF_LOG_ERROR)
	LogWarn  = LogLevel(C.HANDOFF_LOG_WARN)
	LogInfo  = LogLevel(C.HANDOFF_LOG_INFO)
	LogDebug = LogLevel(C.HANDOFF_LOG_DEBUG)
)

func (l LogLevel) String() string {
	switch l {
	case LogError:
		return "error"
	case LogWarn:
		return "warn"
	case LogInfo:
		return "info"
	case LogDebug:
		return "debug"
	}
	return fmt.Sprintf("LogLevel(%d)", uint32(l))
}

var logger struct {
	sync.Mutex
	box unsafe.Pointer // the current logger's handle, in C memory
}

// SetLogger sends every library event to f (nil restores the default:
// warnings and errors on stderr). f may be called from any of the
// library's threads, concurrently; it must not call SetLogger. A panic in
// f is reported on stderr and goes no further.
func SetLogger(f func(level LogLevel, message string)) error {
	logger.Lock()
	defer logger.Unlock()
	var box unsafe.Pointer
	fn := C.handoff_log_fn(nil)
	if f != nil {
		box = newBox(f)
		fn = logCallback()
	}
	var cerr *C.handoff_error
	gcPoint()
	if err := check(C.handoff_set_log_callback(fn, box, &cerr), cerr); err != nil {
		freeBox(box)
		return err
	}
	// The library drops the old callback under a lock that its calls hold:
	// no call still uses the old handle.
	freeBox(logger.box)
	logger.box = box
	return nil
}
