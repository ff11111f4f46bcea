package handoff

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"fmt"
	"net"
	"os"
	"runtime"
)

// ListenerKind is the socket type an inherited listener is taken as.
type ListenerKind uint32

const (
	ListenerTCP  = ListenerKind(C.HANDOFF_LISTENER_TCP)  // a listening TCP socket (IPv4 or IPv6)
	ListenerUDP  = ListenerKind(C.HANDOFF_LISTENER_UDP)  // a UDP socket (IPv4 or IPv6)
	ListenerUnix = ListenerKind(C.HANDOFF_LISTENER_UNIX) // a listening Unix stream socket
)

func (k ListenerKind) String() string {
	switch k {
	case ListenerTCP:
		return "tcp"
	case ListenerUDP:
		return "udp"
	case ListenerUnix:
		return "unix"
	}
	return fmt.Sprintf("ListenerKind(%d)", uint32(k))
}

// The variables handoff_inherited_detect reads and removes. Go keeps its own
// copy of the environment, so they are removed from it too.
var successorVariables = []string{
	"HANDOFF_ROLE", "HANDOFF_SOCK_FD", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
	"HANDOFF_CONTROL_SOCKET",
}

// Inherited is what this process inherited from its supervisor: its role
// and its listeners (and, in a successor, the control socket, which
// NewSuccessor takes). Close closes every listener not taken.
type Inherited struct {
	h object[*C.handoff_inherited]
}

// Detect finds this process's role and adopts what it inherited: listener i
// at fd 3+i (and a successor's control socket), each marked close-on-exec,
// their flags otherwise untouched. It removes HANDOFF_ROLE, HANDOFF_SOCK_FD,
// LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID and HANDOFF_CONTROL_SOCKET from the
// environment (the C one and Go's), so children do not inherit them; call
// it early. A second call
// sees a cold start with no listeners. Malformed variables are
// ErrEnvironment; a listener that is not an open socket ErrListener.
func Detect() (*Inherited, error) {
	var p *C.handoff_inherited
	var cerr *C.handoff_error
	gcPoint()
	status := C.handoff_inherited_detect(&p, &cerr)
	for _, name := range successorVariables {
		os.Unsetenv(name)
	}
	if err := check(status, cerr); err != nil {
		return nil, err
	}
	i := &Inherited{h: object[*C.handoff_inherited]{p: p, what: "inherited listeners"}}
	runtime.SetFinalizer(i, (*Inherited).Close)
	return i, nil
}

// IsSuccessor reports whether this process was spawned as a successor
// (HANDOFF_ROLE=successor).
func (i *Inherited) IsSuccessor() bool {
	var yes bool
	_ = i.h.exclusive(func(p *C.handoff_inherited) error {
		yes = bool(C.handoff_inherited_is_successor(p))
		return nil
	})
	runtime.KeepAlive(i)
	return yes
}

// ListenerNames are the inherited listeners' names in descriptor order
// (listener i was at fd 3+i), taken ones included; "unknown" for a
// listener LISTEN_FDNAMES did not name. nil when there are none.
func (i *Inherited) ListenerNames() ([]string, error) {
	var names []string
	err := i.h.exclusive(func(p *C.handoff_inherited) error {
		n := int(C.handoff_inherited_listener_count(p))
		for k := 0; k < n; k++ {
			var name *C.char
			var cerr *C.handoff_error
			if err := check(C.handoff_inherited_listener_name(p, C.size_t(k), &name, &cerr), cerr); err != nil {
				return err
			}
			// Borrowed from the object: copied while it is alive.
			names = append(names, C.GoString(name))
		}
		return nil
	})
	runtime.KeepAlive(i)
	return names, err
}

// TakeFile takes the listener called name as a socket of kind and gives its
// descriptor as a file this process owns. Its O_NONBLOCK flag is left as
// it is (see Listener). No listener of that name left is ErrListener; one
// of another kind too (it then stays inherited).
func (i *Inherited) TakeFile(name string, kind ListenerKind) (*os.File, error) {
	cname, err := cString(name, "listener name")
	if err != nil {
		return nil, err
	}
	defer freeCString(cname)
	var fd C.int
	err = i.h.exclusive(func(p *C.handoff_inherited) error {
		var cerr *C.handoff_error
		return check(C.handoff_inherited_take_listener(p, cname, C.uint32_t(kind), &fd, &cerr), cerr)
	})
	runtime.KeepAlive(i)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Listener takes the listener called name (ListenerTCP or ListenerUnix)
// as a net.Listener.
//
// Go's net package makes the socket non-blocking, and that flag lives on
// the open file description the supervisor and every generation share
// (DESIGN §3). Take it only once this process owns the service: in a cold
// start, or in a successor after Begin (Successor.Listener refuses before).
// Services taking part in handoffs poll before accepting and handle
// EAGAIN, so a later generation works with the flag set; use TakeFile to
// leave it alone.
func (i *Inherited) Listener(name string, kind ListenerKind) (net.Listener, error) {
	if kind != ListenerTCP && kind != ListenerUnix {
		return nil, newError(StatusInvalidArgument, fmt.Sprintf("a %s socket is not a net.Listener: use PacketConn", kind))
	}
	f, err := i.TakeFile(name, kind)
	if err != nil {
		return nil, err
	}
	return fileListener(f)
}

// PacketConn takes the UDP socket called name as a net.PacketConn; as with
// Listener, Go makes the shared socket non-blocking.
func (i *Inherited) PacketConn(name string) (net.PacketConn, error) {
	f, err := i.TakeFile(name, ListenerUDP)
	if err != nil {
		return nil, err
	}
	return filePacketConn(f)
}

// Close closes every listener not taken (and a successor's control socket
// if NewSuccessor did not take it). Idempotent.
func (i *Inherited) Close() error {
	runtime.SetFinalizer(i, nil)
	C.handoff_inherited_free(i.h.take())
	return nil
}

// fileListener wraps a taken descriptor. net.FileListener works on a
// duplicate, so the original is closed here. Closing a Unix listener made
// this way does not remove its path.
func fileListener(f *os.File) (net.Listener, error) {
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, newError(StatusListener, fmt.Sprintf("listener %s: %v", f.Name(), err))
	}
	return l, nil
}

func filePacketConn(f *os.File) (net.PacketConn, error) {
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, newError(StatusListener, fmt.Sprintf("listener %s: %v", f.Name(), err))
	}
	return c, nil
}
