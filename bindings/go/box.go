package handoff

/*
#include <stdint.h>
#include <stdlib.h>
#include <handoff.h>

// The callbacks exported by callbacks.go.
extern int32_t handoffGoDrain(void *userdata, handoff_hook_context *ctx);
extern int32_t handoffGoSeal(void *userdata, handoff_hook_context *ctx);
extern int32_t handoffGoResume(void *userdata, handoff_hook_context *ctx);
extern void handoffGoDestroy(void *userdata);
extern void handoffGoLog(void *userdata, uint32_t level, char *message);

// A handle's value in C memory: userdata the library may keep, with no Go
// pointer in it (and no integer posing as a pointer on the Go side).
static inline void *handoff_go_box(uintptr_t handle) {
	uintptr_t *box = malloc(sizeof *box);
	if (box != NULL)
		*box = handle;
	return box;
}

static inline handoff_service_callbacks handoff_go_service_callbacks(void) {
	handoff_service_callbacks callbacks = {
		handoffGoDrain, handoffGoSeal, handoffGoResume, handoffGoDestroy,
	};
	return callbacks;
}

static inline handoff_log_fn handoff_go_log_fn(void) {
	return (handoff_log_fn)handoffGoLog;
}
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// newBox puts a new handle to v in C memory; freeBox deletes both.
func newBox(v any) unsafe.Pointer {
	h := cgo.NewHandle(v)
	box := C.handoff_go_box(C.uintptr_t(h))
	if box == nil {
		h.Delete()
		panic("handoff: out of memory")
	}
	return box
}

// The C function pointers of the exported callbacks.
func serviceCallbacks() C.handoff_service_callbacks { return C.handoff_go_service_callbacks() }
func logCallback() C.handoff_log_fn                 { return C.handoff_go_log_fn() }

func freeBox(box unsafe.Pointer) {
	if box == nil {
		return
	}
	handleOf(box).Delete()
	C.free(box)
}
