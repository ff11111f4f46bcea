//go:build handoff_gcstress

package handoff

import "runtime"

// gcPoint collects garbage and lets finalizers run right before every C
// call, after the handle's pointer was read: a handle whose wrapper is not
// kept alive across its C call is then freed under the call, which the
// tests (run with -tags handoff_gcstress) turn into a failure or a crash.
func gcPoint() {
	runtime.GC()
	runtime.Gosched()
}
