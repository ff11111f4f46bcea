//go:build !amd64 && !arm64

package handoff

// No memfd_create number known for this architecture: memfd falls back to
// an unlinked temporary file.
const sysMemfdCreate = -1
