module libhandoff.dev/handoff

go 1.21
