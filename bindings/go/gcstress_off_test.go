//go:build !handoff_gcstress

package handoff

const gcstressEnabled = false
