//go:build !handoff_gcstress

package handoff

// gcPoint is where a handoff_gcstress build collects garbage: right before
// every C call, after the handle's pointer was read.
func gcPoint() {}
