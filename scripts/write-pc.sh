#!/bin/sh
# Usage: write-pc.sh PREFIX LIBDIR INCLUDEDIR VERSION [in-tree] > handoff.pc
# "in-tree" adds an rpath, so programs built against the build tree run
# without LD_LIBRARY_PATH; an installed library needs none.
rpath=
[ "${5:-}" = in-tree ] && rpath=' -Wl,-rpath,${libdir}'
cat <<PC
prefix=$1
libdir=$2
includedir=$3

Name: handoff
Description: zero-downtime handoff of stateful services
Version: $4
Libs: -L\${libdir}$rpath -lhandoff
Libs.private: -lpthread -ldl -lm
Cflags: -I\${includedir}
PC
