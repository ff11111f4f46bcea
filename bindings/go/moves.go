package handoff

// Protocol v2 (docs/protocol.md): descriptors that move from the incumbent
// to its successor with their state. This is the thin layer over the C
// ABI: descriptors as numbers the service owns (incumbent) or *os.File
// (successor).

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"os"
	"runtime"
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

// AdoptedItem is one descriptor that moved to this successor.
type AdoptedItem struct {
	Kind ItemKind
	Name string
	// File is the descriptor, the caller's to close (never shutdown).
	File      *os.File
	Unread    []byte
	Unwritten []byte
	State     []byte
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
