package handoff

// Protocol v2 (docs/protocol.md): descriptors that move from the incumbent
// to its successor with their state. The thin layer over the C ABI takes
// descriptors as numbers (Move) and gives them as *os.File (AdoptedItem's
// File); on top of it, MoveConn and MoveFile take a net.Conn or an *os.File
// and AdoptedItem.Conn gives a net.Conn.
//
// Who owns which copy, when:
//
//   - The incumbent's copy stays its own throughout: a move shares the
//     connection (the open file description), it does not give it away.
//     From the Move until the outcome the incumbent neither reads nor
//     writes it (the successor may already be serving it) and keeps it
//     open. Once serving ended committed (the requests channel closed,
//     Wait says ServeCommitted) it closes it: Close, never CloseWrite or
//     shutdown, which would end the connection for the successor too. On
//     a RequestResume it is the incumbent's again, its file status flags
//     as they were when it moved (the library restores them), to carry on
//     from the state the incumbent kept: nothing lost, nothing answered
//     twice.
//   - The successor's copy is its own from Adopt on: it serves it from
//     AnnounceReady on (first Unwritten, then Unread, then what it reads)
//     and, if it fails before, just closes it (never shutdown: the
//     incumbent takes the connection back).

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

// ItemKind is what a moved descriptor is (HANDOFF_ITEM_*).
type ItemKind uint32

const (
	// ItemConnection is a client connection, with its carried input and output.
	ItemConnection = ItemKind(C.HANDOFF_ITEM_CONNECTION)
	// ItemDescriptor is any other descriptor the service names (a memfd, a
	// UDP socket, an open file).
	ItemDescriptor = ItemKind(C.HANDOFF_ITEM_DESCRIPTOR)
)

// SetMovesDescriptors says the service hands its connections (and other
// descriptors) to its successor when the handoff allows it: the incumbent
// offers protocol v2, and a drain's MoveLimit says how many may move.
// Before Start or StartLoop.
func (i *Incumbent) SetMovesDescriptors(moves bool) error {
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		return check(C.handoff_incumbent_set_moves_descriptors(p, C.bool(moves), &cerr), cerr)
	})
	runtime.KeepAlive(i)
	return err
}

// Moves says whether this drain moves descriptors (both peers speak protocol
// v2): then Move every connection the service keeps instead of closing it;
// otherwise close them as without v2.
func (r *Request) Moves() bool {
	var moves bool
	_ = r.with(func(ctx *C.handoff_hook_context) error {
		moves = bool(C.handoff_hook_moves(ctx))
		return nil
	})
	return moves
}

// MoveLimit is how many descriptors the successor can hold in a drain that
// moves (it may be 0). Moving more is not refused here: the supervisor then
// aborts the handoff naming the successor's limit, and the service keeps
// every connection.
func (r *Request) MoveLimit() uint32 {
	var limit uint32
	_ = r.with(func(ctx *C.handoff_hook_context) error {
		limit = uint32(C.handoff_hook_move_limit(ctx))
		return nil
	})
	return limit
}

// Move hands fd to the successor in a drain that moves, as an item of kind
// named name, with the bytes read and not processed (unread), produced and
// not written (unwritten) and the service's own state. The service keeps
// fd open and neither reads nor writes it until the outcome: it closes it
// once serving ended committed (never shutdown), and takes it back as it
// was on a resume.
func (r *Request) Move(kind ItemKind, name string, fd int, unread, unwritten, state []byte) error {
	cname, err := cString(name, "item name")
	if err != nil {
		return err
	}
	defer freeCString(cname)
	return r.with(func(ctx *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		ur, urn := bytesArg(unread)
		uw, uwn := bytesArg(unwritten)
		st, stn := bytesArg(state)
		status := C.handoff_hook_move(ctx, C.uint32_t(kind), cname, C.int(fd), ur, urn, uw, uwn, st, stn, &cerr)
		runtime.KeepAlive(unread)
		runtime.KeepAlive(unwritten)
		runtime.KeepAlive(state)
		return check(status, cerr)
	})
}

// SetAdoptsDescriptors says the service adopts what an incumbent moves:
// the handshake offers protocol v2. Before Handshake.
func (s *Successor) SetAdoptsDescriptors(adopts bool) error {
	err := s.h.exclusive(func(p *C.handoff_successor) error {
		var cerr *C.handoff_error
		return check(C.handoff_successor_set_adopts_descriptors(p, C.bool(adopts), &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return err
}

// MoveConn hands a client connection (a *net.TCPConn, *net.UnixConn, or
// anything else with a descriptor) to the successor in a drain that moves
// (Moves), as an ItemConnection named name, with the bytes read and not
// processed (unread), produced and not written (unwritten) and the
// service's own state for it. See Move for what the incumbent does with
// its copy until the outcome.
//
// The descriptor is lent for the call through SyscallConn().Control, never
// taken with (*net.TCPConn).File or os.File.Fd: those put the descriptor in
// blocking mode, and the open file description (so its O_NONBLOCK flag) is
// shared with the successor and with the incumbent's own net.Conn. A closed
// connection is ErrInvalidArgument.
func (r *Request) MoveConn(name string, conn syscall.Conn, unread, unwritten, state []byte) error {
	return r.moveRaw(ItemConnection, name, conn, unread, unwritten, state)
}

// MoveFile hands any other descriptor (a memfd, an open file, a UDP
// socket: an *os.File, *net.UDPConn, ...) to the successor as an
// ItemDescriptor named name, with the service's state for it. Like
// MoveConn, it lends the descriptor without changing its mode; the
// incumbent keeps its copy as for Move.
func (r *Request) MoveFile(name string, f syscall.Conn, state []byte) error {
	return r.moveRaw(ItemDescriptor, name, f, nil, nil, state)
}

// moveRaw is Move with the descriptor of c, for the duration of the call.
func (r *Request) moveRaw(kind ItemKind, name string, c syscall.Conn, unread, unwritten, state []byte) error {
	if c == nil {
		return newError(StatusInvalidArgument, fmt.Sprintf("item %q: no descriptor given", name))
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return newError(StatusInvalidArgument, fmt.Sprintf("item %q: %v", name, err))
	}
	var moved error
	err = raw.Control(func(fd uintptr) {
		moved = r.Move(kind, name, int(fd), unread, unwritten, state)
	})
	runtime.KeepAlive(c)
	if err != nil {
		// Control fails only when c is closed: nothing was recorded.
		return newError(StatusInvalidArgument, fmt.Sprintf("item %q: the descriptor is closed (%v)", name, err))
	}
	return moved
}

// AdoptedItem is one descriptor that moved to this successor.
type AdoptedItem struct {
	Kind ItemKind
	Name string
	// File is the descriptor (close-on-exec), the caller's to close (never
	// shutdown); nil once Conn took it.
	File      *os.File
	Unread    []byte
	Unwritten []byte
	State     []byte
}

// Conn makes a moved connection (an ItemConnection) a net.Conn
// (*net.TCPConn for TCP), non-blocking and close-on-exec, and closes File,
// which it replaces (File is then nil). The net.Conn is the caller's: it
// serves it from AnnounceReady on, and closes it (Close, never CloseWrite)
// if it fails before. ErrWrongState for another kind of item or a File
// already taken or closed; a descriptor that is not a socket is
// ErrInvalidArgument (File is then left as it was).
func (a *AdoptedItem) Conn() (net.Conn, error) {
	if a.Kind != ItemConnection {
		return nil, newError(StatusWrongState, fmt.Sprintf("moved item %q is not a connection (kind %d)", a.Name, a.Kind))
	}
	if a.File == nil {
		return nil, newError(StatusWrongState, fmt.Sprintf("moved item %q: its descriptor was already taken", a.Name))
	}
	// net.FileConn works on a duplicate (close-on-exec, made non-blocking:
	// the flag is the shared description's, as the contract asks).
	c, err := net.FileConn(a.File)
	if errors.Is(err, os.ErrClosed) {
		return nil, newError(StatusWrongState, fmt.Sprintf("moved item %q: its descriptor was closed", a.Name))
	}
	if err != nil {
		return nil, newError(StatusInvalidArgument, fmt.Sprintf("moved item %q is not a connection: %v", a.Name, err))
	}
	a.File.Close()
	a.File = nil
	return c, nil
}

// Close closes the item's descriptor if it was not taken (never shutdown:
// an incumbent that takes the connection back still serves it). For a
// successor that gives up before Ready. Idempotent.
func (a *AdoptedItem) Close() error {
	if a.File == nil {
		return nil
	}
	err := a.File.Close()
	a.File = nil
	return err
}

// Adopt gives what the incumbent moved, in its order: after WaitForBegin
// and only holding the data-dir lock (nothing moved is read or written
// before). Once per handoff, before AnnounceReady. For each connection,
// write Unwritten first, then process Unread, then read it.
func (s *Successor) Adopt(lock *Lock) ([]AdoptedItem, error) {
	if lock == nil {
		return nil, newError(StatusNullPointer, "no lock given")
	}
	var items *C.handoff_items
	err := s.h.exclusive(func(sp *C.handoff_successor) error {
		return lock.h.alone(func(lp *C.handoff_lock) error {
			var cerr *C.handoff_error
			return check(C.handoff_successor_adopt(sp, lp, &items, &cerr), cerr)
		})
	})
	runtime.KeepAlive(s)
	runtime.KeepAlive(lock)
	if err != nil {
		return nil, err
	}
	defer C.handoff_items_free(items)
	n := int(C.handoff_items_count(items))
	adopted := make([]AdoptedItem, 0, n)
	part := func(i int, which C.uint32_t) []byte {
		var data *C.uint8_t
		var length C.size_t
		if !C.handoff_items_bytes(items, C.size_t(i), which, &data, &length) {
			return nil
		}
		return goBytes(data, length)
	}
	for i := 0; i < n; i++ {
		name := string(part(i, C.HANDOFF_ITEM_PART_NAME))
		fd := int(C.handoff_items_take_fd(items, C.size_t(i)))
		adopted = append(adopted, AdoptedItem{
			Kind:      ItemKind(C.handoff_items_kind(items, C.size_t(i))),
			Name:      name,
			File:      os.NewFile(uintptr(fd), name),
			Unread:    part(i, C.HANDOFF_ITEM_PART_UNREAD),
			Unwritten: part(i, C.HANDOFF_ITEM_PART_UNWRITTEN),
			State:     part(i, C.HANDOFF_ITEM_PART_STATE),
		})
	}
	return adopted, nil
}
