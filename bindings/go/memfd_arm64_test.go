package handoff

// memfd_create(2): the syscall package has no constant for it here.
const sysMemfdCreate = 279
