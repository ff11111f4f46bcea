module libhandoff.dev/examples/minimal-go

go 1.21

require libhandoff.dev/handoff v0.0.0

// The binding is used from this source tree, never fetched.
replace libhandoff.dev/handoff => ../../../bindings/go
