//go:build !handoff_nopkgconfig

package handoff

// The library is found through pkg-config (handoff.pc). Build with
// -tags handoff_nopkgconfig to use CGO_CFLAGS and CGO_LDFLAGS instead.

// #cgo pkg-config: handoff
import "C"
