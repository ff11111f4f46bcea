package handoff

// The library's callbacks into Go. C never holds a Go pointer: its
// userdata is a C-allocated box holding a runtime/cgo.Handle, and every
// callback recovers from panics, so a panicking service turns into a
// failed hook, never a crashed process.

/*
#include <stdint.h>
#include <handoff.h>

static inline uintptr_t handoff_go_unbox(void *box) { return *(uintptr_t *)box; }
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
	"unsafe"
)

// handleOf is the cgo.Handle a box holds.
func handleOf(box unsafe.Pointer) cgo.Handle {
	return cgo.Handle(C.handoff_go_unbox(box))
}

//export handoffGoDrain
func handoffGoDrain(userdata unsafe.Pointer, ctx *C.handoff_hook_context) C.int32_t {
	return handleOf(userdata).Value().(*serving).call(hookDrain, ctx)
}

//export handoffGoSeal
func handoffGoSeal(userdata unsafe.Pointer, ctx *C.handoff_hook_context) C.int32_t {
	return handleOf(userdata).Value().(*serving).call(hookSeal, ctx)
}

//export handoffGoResume
func handoffGoResume(userdata unsafe.Pointer, ctx *C.handoff_hook_context) C.int32_t {
	return handleOf(userdata).Value().(*serving).call(hookResume, ctx)
}

// handoffGoDestroy: the library no longer needs the userdata (serving has
// ended): Wait learns it, and the handle goes, and with it the last
// reference to the service.
//
//export handoffGoDestroy
func handoffGoDestroy(userdata unsafe.Pointer) {
	close(handleOf(userdata).Value().(*serving).ended)
	freeBox(userdata)
}

//export handoffGoLog
func handoffGoLog(userdata unsafe.Pointer, level C.uint32_t, message *C.char) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "handoff: the log callback panicked: %v\n", r)
		}
	}()
	f := handleOf(userdata).Value().(func(LogLevel, string))
	f(LogLevel(level), C.GoString(message))
}
