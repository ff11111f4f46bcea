package handoff

/*
#include <handoff.h>
*/
import "C"

import (
	"encoding/hex"
	"fmt"
	"runtime"
)

// MessageKind is a message's wire index (HANDOFF_MSG_*).
type MessageKind uint32

// The 14 messages of protocol v1, in wire order.
const (
	KindHello            = MessageKind(C.HANDOFF_MSG_HELLO)
	KindHelloAck         = MessageKind(C.HANDOFF_MSG_HELLO_ACK)
	KindPrepareHandoff   = MessageKind(C.HANDOFF_MSG_PREPARE_HANDOFF)
	KindDrained          = MessageKind(C.HANDOFF_MSG_DRAINED)
	KindSealRequest      = MessageKind(C.HANDOFF_MSG_SEAL_REQUEST)
	KindSealProgress     = MessageKind(C.HANDOFF_MSG_SEAL_PROGRESS)
	KindSealComplete     = MessageKind(C.HANDOFF_MSG_SEAL_COMPLETE)
	KindSealFailed       = MessageKind(C.HANDOFF_MSG_SEAL_FAILED)
	KindBegin            = MessageKind(C.HANDOFF_MSG_BEGIN)
	KindReady            = MessageKind(C.HANDOFF_MSG_READY)
	KindCommit           = MessageKind(C.HANDOFF_MSG_COMMIT)
	KindAbort            = MessageKind(C.HANDOFF_MSG_ABORT)
	KindResumeAfterAbort = MessageKind(C.HANDOFF_MSG_RESUME_AFTER_ABORT)
	KindHeartbeat        = MessageKind(C.HANDOFF_MSG_HEARTBEAT)
)

// The 5 messages protocol v2 adds (docs/protocol.md), in wire order. They
// exist only in frames of version 2 or later: Encode stamps them with 2,
// EncodeFrame refuses them in a v1 frame, and Decode reads one in a v1
// frame as an unknown message (ErrUnknownMessage).
const (
	KindCapacity = MessageKind(C.HANDOFF_MSG_CAPACITY)
	KindTransfer = MessageKind(C.HANDOFF_MSG_TRANSFER)
	KindMoving   = MessageKind(C.HANDOFF_MSG_MOVING)
	KindItem     = MessageKind(C.HANDOFF_MSG_ITEM)
	KindAdopted  = MessageKind(C.HANDOFF_MSG_ADOPTED)
)

// String is the message's name ("SealComplete").
func (k MessageKind) String() string {
	name := C.handoff_message_kind_name(C.uint32_t(k))
	if name == nil {
		return fmt.Sprintf("MessageKind(%d)", uint32(k))
	}
	return C.GoString(name)
}

// Side is the role a Hello announces.
type Side uint32

const (
	SideIncumbent = Side(C.HANDOFF_SIDE_INCUMBENT)
	SideSuccessor = Side(C.HANDOFF_SIDE_SUCCESSOR)
)

// HandoffID is the 16-byte id of one handoff (a UUID).
type HandoffID [16]byte

// String formats the id as a UUID.
func (id HandoffID) String() string {
	h := hex.EncodeToString(id[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Message is one of the protocol messages: v1's 14 (Hello, HelloAck, ...,
// Heartbeat) and v2's 5 (Capacity, ..., Adopted), values or pointers.
// Decode returns pointers (*Hello, ...).
type Message interface {
	Kind() MessageKind
	// put writes the fields into a new C message of the same kind.
	put(m cmsg) error
}

// decodable reads the fields out of a C message; implemented by the
// pointer types.
type decodable interface {
	Message
	get(m cmsg) error
}

// Hello (0): the first message of an incumbent or a successor.
type Hello struct {
	Role                 Side
	PID                  uint32
	BuildID              []byte
	ProtoMin, ProtoMax   uint16
	CapabilitiesReserved uint64
}

// HelloAck (1): the supervisor's answer to a Hello.
type HelloAck struct {
	ProtoVersionChosen uint16
	HandoffID          HandoffID
}

// PrepareHandoff (2): the supervisor asks the incumbent to drain.
type PrepareHandoff struct {
	HandoffID    HandoffID
	SuccessorPID uint32
	DeadlineMS   uint64 // time left in the whole handoff
	DrainGraceMS uint64
}

// Drained (3): the incumbent has drained.
type Drained struct {
	OpenConnsRemaining uint32
	AcceptClosed       bool
}

// SealRequest (4): the supervisor asks the incumbent to seal.
type SealRequest struct {
	HandoffID HandoffID
}

// SealProgress (5): an incumbent's progress through a long seal.
type SealProgress struct {
	ShardsSealed, ShardsTotal uint32
	LastRevision              uint64
}

// SealComplete (6): the incumbent sealed and released the lock.
type SealComplete struct {
	HandoffID            HandoffID
	LastRevisionPerShard []uint64
	DataDirFingerprint   [32]byte
}

// SealFailed (7): the incumbent could not seal; it kept the lock.
type SealFailed struct {
	HandoffID    HandoffID
	Error        string
	PartialState string
}

// Begin (8): the supervisor tells the successor to take over.
type Begin struct {
	HandoffID HandoffID
}

// Ready (9): the successor serves. Also what
// Successor.AnnounceReady sends (its HandoffID is then ignored).
type Ready struct {
	HandoffID                  HandoffID
	ListeningOn                []string
	HealthzOK                  bool
	AdvertisedRevisionPerShard []uint64
}

// Commit (10): the incumbent may exit.
type Commit struct {
	HandoffID HandoffID
}

// Abort (11): the handoff is rolled back.
type Abort struct {
	HandoffID HandoffID
	Reason    string
}

// ResumeAfterAbort (12): the incumbent resumes serving.
type ResumeAfterAbort struct {
	HandoffID HandoffID
}

// Heartbeat (13): liveness, with the sender's clock (unix milliseconds).
type Heartbeat struct {
	TsMS uint64
}

// Capacity (14, protocol v2): how many descriptors the successor can take in.
type Capacity struct {
	Descriptors uint32
}

// Transfer (15, protocol v2): the supervisor tells the incumbent that this
// handoff moves descriptors, at most ItemsMax of them.
type Transfer struct {
	HandoffID HandoffID
	ItemsMax  uint32
}

// Moving (16, protocol v2): how many Item frames follow.
type Moving struct {
	HandoffID HandoffID
	Items     uint32
}

// Item (17, protocol v2): one moved descriptor's description. On the wire
// its frame carries the descriptor itself (SCM_RIGHTS); this is only the
// frame's message.
type Item struct {
	Seq       uint32
	ItemKind  ItemKind
	Name      string
	Unread    []byte
	Unwritten []byte
	State     []byte
}

// Adopted (18, protocol v2): how many items the successor adopted.
type Adopted struct {
	HandoffID HandoffID
	Items     uint32
}

func (Hello) Kind() MessageKind            { return KindHello }
func (HelloAck) Kind() MessageKind         { return KindHelloAck }
func (PrepareHandoff) Kind() MessageKind   { return KindPrepareHandoff }
func (Drained) Kind() MessageKind          { return KindDrained }
func (SealRequest) Kind() MessageKind      { return KindSealRequest }
func (SealProgress) Kind() MessageKind     { return KindSealProgress }
func (SealComplete) Kind() MessageKind     { return KindSealComplete }
func (SealFailed) Kind() MessageKind       { return KindSealFailed }
func (Begin) Kind() MessageKind            { return KindBegin }
func (Ready) Kind() MessageKind            { return KindReady }
func (Commit) Kind() MessageKind           { return KindCommit }
func (Abort) Kind() MessageKind            { return KindAbort }
func (ResumeAfterAbort) Kind() MessageKind { return KindResumeAfterAbort }
func (Heartbeat) Kind() MessageKind        { return KindHeartbeat }
func (Capacity) Kind() MessageKind         { return KindCapacity }
func (Transfer) Kind() MessageKind         { return KindTransfer }
func (Moving) Kind() MessageKind           { return KindMoving }
func (Item) Kind() MessageKind             { return KindItem }
func (Adopted) Kind() MessageKind          { return KindAdopted }

// Field lists: which C field each Go field is. The library validates and
// encodes; nothing here knows the wire format.

func (h Hello) put(m cmsg) error {
	return firstError(
		m.setUint(C.HANDOFF_FIELD_ROLE, uint64(h.Role)),
		m.setUint(C.HANDOFF_FIELD_PID, uint64(h.PID)),
		m.setBytes(C.HANDOFF_FIELD_BUILD_ID, h.BuildID),
		m.setUint(C.HANDOFF_FIELD_PROTO_MIN, uint64(h.ProtoMin)),
		m.setUint(C.HANDOFF_FIELD_PROTO_MAX, uint64(h.ProtoMax)),
		m.setUint(C.HANDOFF_FIELD_CAPABILITIES_RESERVED, h.CapabilitiesReserved),
	)
}

func (h *Hello) get(m cmsg) error {
	var role, pid, lo, hi uint64
	err := firstError(
		m.getUint(C.HANDOFF_FIELD_ROLE, &role),
		m.getUint(C.HANDOFF_FIELD_PID, &pid),
		m.getBytes(C.HANDOFF_FIELD_BUILD_ID, &h.BuildID),
		m.getUint(C.HANDOFF_FIELD_PROTO_MIN, &lo),
		m.getUint(C.HANDOFF_FIELD_PROTO_MAX, &hi),
		m.getUint(C.HANDOFF_FIELD_CAPABILITIES_RESERVED, &h.CapabilitiesReserved),
	)
	h.Role, h.PID, h.ProtoMin, h.ProtoMax = Side(role), uint32(pid), uint16(lo), uint16(hi)
	return err
}

func (h HelloAck) put(m cmsg) error {
	return firstError(
		m.setUint(C.HANDOFF_FIELD_PROTO_VERSION_CHOSEN, uint64(h.ProtoVersionChosen)),
		m.setID(h.HandoffID),
	)
}

func (h *HelloAck) get(m cmsg) error {
	var v uint64
	err := firstError(m.getUint(C.HANDOFF_FIELD_PROTO_VERSION_CHOSEN, &v), m.getID(&h.HandoffID))
	h.ProtoVersionChosen = uint16(v)
	return err
}

func (p PrepareHandoff) put(m cmsg) error {
	return firstError(
		m.setID(p.HandoffID),
		m.setUint(C.HANDOFF_FIELD_SUCCESSOR_PID, uint64(p.SuccessorPID)),
		m.setUint(C.HANDOFF_FIELD_DEADLINE_MS, p.DeadlineMS),
		m.setUint(C.HANDOFF_FIELD_DRAIN_GRACE_MS, p.DrainGraceMS),
	)
}

func (p *PrepareHandoff) get(m cmsg) error {
	var pid uint64
	err := firstError(
		m.getID(&p.HandoffID),
		m.getUint(C.HANDOFF_FIELD_SUCCESSOR_PID, &pid),
		m.getUint(C.HANDOFF_FIELD_DEADLINE_MS, &p.DeadlineMS),
		m.getUint(C.HANDOFF_FIELD_DRAIN_GRACE_MS, &p.DrainGraceMS),
	)
	p.SuccessorPID = uint32(pid)
	return err
}

func (d Drained) put(m cmsg) error {
	return firstError(
		m.setUint(C.HANDOFF_FIELD_OPEN_CONNS_REMAINING, uint64(d.OpenConnsRemaining)),
		m.setBool(C.HANDOFF_FIELD_ACCEPT_CLOSED, d.AcceptClosed),
	)
}

func (d *Drained) get(m cmsg) error {
	var open uint64
	err := firstError(
		m.getUint(C.HANDOFF_FIELD_OPEN_CONNS_REMAINING, &open),
		m.getBool(C.HANDOFF_FIELD_ACCEPT_CLOSED, &d.AcceptClosed),
	)
	d.OpenConnsRemaining = uint32(open)
	return err
}

func (s SealRequest) put(m cmsg) error  { return m.setID(s.HandoffID) }
func (s *SealRequest) get(m cmsg) error { return m.getID(&s.HandoffID) }

func (s SealProgress) put(m cmsg) error {
	return firstError(
		m.setUint(C.HANDOFF_FIELD_SHARDS_SEALED, uint64(s.ShardsSealed)),
		m.setUint(C.HANDOFF_FIELD_SHARDS_TOTAL, uint64(s.ShardsTotal)),
		m.setUint(C.HANDOFF_FIELD_LAST_REVISION, s.LastRevision),
	)
}

func (s *SealProgress) get(m cmsg) error {
	var sealed, total uint64
	err := firstError(
		m.getUint(C.HANDOFF_FIELD_SHARDS_SEALED, &sealed),
		m.getUint(C.HANDOFF_FIELD_SHARDS_TOTAL, &total),
		m.getUint(C.HANDOFF_FIELD_LAST_REVISION, &s.LastRevision),
	)
	s.ShardsSealed, s.ShardsTotal = uint32(sealed), uint32(total)
	return err
}

func (s SealComplete) put(m cmsg) error {
	return firstError(
		m.setID(s.HandoffID),
		m.setUints(C.HANDOFF_FIELD_LAST_REVISION_PER_SHARD, s.LastRevisionPerShard),
		m.setBytes(C.HANDOFF_FIELD_DATA_DIR_FINGERPRINT, s.DataDirFingerprint[:]),
	)
}

func (s *SealComplete) get(m cmsg) error {
	var fingerprint []byte
	err := firstError(
		m.getID(&s.HandoffID),
		m.getUints(C.HANDOFF_FIELD_LAST_REVISION_PER_SHARD, &s.LastRevisionPerShard),
		m.getBytes(C.HANDOFF_FIELD_DATA_DIR_FINGERPRINT, &fingerprint),
	)
	copy(s.DataDirFingerprint[:], fingerprint)
	return err
}

func (s SealFailed) put(m cmsg) error {
	return firstError(
		m.setID(s.HandoffID),
		m.setString(C.HANDOFF_FIELD_ERROR, s.Error),
		m.setString(C.HANDOFF_FIELD_PARTIAL_STATE, s.PartialState),
	)
}

func (s *SealFailed) get(m cmsg) error {
	return firstError(
		m.getID(&s.HandoffID),
		m.getString(C.HANDOFF_FIELD_ERROR, &s.Error),
		m.getString(C.HANDOFF_FIELD_PARTIAL_STATE, &s.PartialState),
	)
}

func (b Begin) put(m cmsg) error  { return m.setID(b.HandoffID) }
func (b *Begin) get(m cmsg) error { return m.getID(&b.HandoffID) }

func (r Ready) put(m cmsg) error {
	return firstError(
		m.setID(r.HandoffID),
		m.setStrings(C.HANDOFF_FIELD_LISTENING_ON, r.ListeningOn),
		m.setBool(C.HANDOFF_FIELD_HEALTHZ_OK, r.HealthzOK),
		m.setUints(C.HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, r.AdvertisedRevisionPerShard),
	)
}

func (r *Ready) get(m cmsg) error {
	return firstError(
		m.getID(&r.HandoffID),
		m.getStrings(C.HANDOFF_FIELD_LISTENING_ON, &r.ListeningOn),
		m.getBool(C.HANDOFF_FIELD_HEALTHZ_OK, &r.HealthzOK),
		m.getUints(C.HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, &r.AdvertisedRevisionPerShard),
	)
}

func (c Commit) put(m cmsg) error  { return m.setID(c.HandoffID) }
func (c *Commit) get(m cmsg) error { return m.getID(&c.HandoffID) }

func (a Abort) put(m cmsg) error {
	return firstError(m.setID(a.HandoffID), m.setString(C.HANDOFF_FIELD_REASON, a.Reason))
}

func (a *Abort) get(m cmsg) error {
	return firstError(m.getID(&a.HandoffID), m.getString(C.HANDOFF_FIELD_REASON, &a.Reason))
}

func (r ResumeAfterAbort) put(m cmsg) error  { return m.setID(r.HandoffID) }
func (r *ResumeAfterAbort) get(m cmsg) error { return m.getID(&r.HandoffID) }

func (h Heartbeat) put(m cmsg) error  { return m.setUint(C.HANDOFF_FIELD_TS_MS, h.TsMS) }
func (h *Heartbeat) get(m cmsg) error { return m.getUint(C.HANDOFF_FIELD_TS_MS, &h.TsMS) }

func (c Capacity) put(m cmsg) error {
	return m.setUint(C.HANDOFF_FIELD_DESCRIPTORS, uint64(c.Descriptors))
}

func (c *Capacity) get(m cmsg) error {
	return m.getUint32(C.HANDOFF_FIELD_DESCRIPTORS, &c.Descriptors)
}

func (t Transfer) put(m cmsg) error {
	return firstError(m.setID(t.HandoffID), m.setUint(C.HANDOFF_FIELD_ITEMS_MAX, uint64(t.ItemsMax)))
}

func (t *Transfer) get(m cmsg) error {
	return firstError(m.getID(&t.HandoffID), m.getUint32(C.HANDOFF_FIELD_ITEMS_MAX, &t.ItemsMax))
}

func (v Moving) put(m cmsg) error {
	return firstError(m.setID(v.HandoffID), m.setUint(C.HANDOFF_FIELD_ITEMS, uint64(v.Items)))
}

func (v *Moving) get(m cmsg) error {
	return firstError(m.getID(&v.HandoffID), m.getUint32(C.HANDOFF_FIELD_ITEMS, &v.Items))
}

func (it Item) put(m cmsg) error {
	return firstError(
		m.setUint(C.HANDOFF_FIELD_SEQ, uint64(it.Seq)),
		m.setUint(C.HANDOFF_FIELD_ITEM_KIND, uint64(it.ItemKind)),
		m.setString(C.HANDOFF_FIELD_NAME, it.Name),
		m.setBytes(C.HANDOFF_FIELD_UNREAD, it.Unread),
		m.setBytes(C.HANDOFF_FIELD_UNWRITTEN, it.Unwritten),
		m.setBytes(C.HANDOFF_FIELD_STATE, it.State),
	)
}

func (it *Item) get(m cmsg) error {
	var kind uint32
	err := firstError(
		m.getUint32(C.HANDOFF_FIELD_SEQ, &it.Seq),
		m.getUint32(C.HANDOFF_FIELD_ITEM_KIND, &kind),
		m.getString(C.HANDOFF_FIELD_NAME, &it.Name),
		m.getBytes(C.HANDOFF_FIELD_UNREAD, &it.Unread),
		m.getBytes(C.HANDOFF_FIELD_UNWRITTEN, &it.Unwritten),
		m.getBytes(C.HANDOFF_FIELD_STATE, &it.State),
	)
	it.ItemKind = ItemKind(kind)
	return err
}

func (a Adopted) put(m cmsg) error {
	return firstError(m.setID(a.HandoffID), m.setUint(C.HANDOFF_FIELD_ITEMS, uint64(a.Items)))
}

func (a *Adopted) get(m cmsg) error {
	return firstError(m.getID(&a.HandoffID), m.getUint32(C.HANDOFF_FIELD_ITEMS, &a.Items))
}

// newDecodable is an empty message of `kind` to read fields into.
func newDecodable(kind MessageKind) decodable {
	switch kind {
	case KindHello:
		return &Hello{}
	case KindHelloAck:
		return &HelloAck{}
	case KindPrepareHandoff:
		return &PrepareHandoff{}
	case KindDrained:
		return &Drained{}
	case KindSealRequest:
		return &SealRequest{}
	case KindSealProgress:
		return &SealProgress{}
	case KindSealComplete:
		return &SealComplete{}
	case KindSealFailed:
		return &SealFailed{}
	case KindBegin:
		return &Begin{}
	case KindReady:
		return &Ready{}
	case KindCommit:
		return &Commit{}
	case KindAbort:
		return &Abort{}
	case KindResumeAfterAbort:
		return &ResumeAfterAbort{}
	case KindHeartbeat:
		return &Heartbeat{}
	case KindCapacity:
		return &Capacity{}
	case KindTransfer:
		return &Transfer{}
	case KindMoving:
		return &Moving{}
	case KindItem:
		return &Item{}
	case KindAdopted:
		return &Adopted{}
	}
	return nil
}

// Frame is a message with the protocol version of its frame.
type Frame struct {
	// Version is the frame's protocol version; 0 when encoding means the
	// library's default: 1, or 2 for a message that exists only from v2 on.
	Version uint16
	Message Message
}

// NewMessage is a message of `kind` with the library's defaults (every
// field zero or empty, except that a Hello announces versions 1..1 and a
// HelloAck chooses 1).
func NewMessage(kind MessageKind) (Message, error) {
	p, err := newCMessage(kind)
	if err != nil {
		return nil, err
	}
	defer C.handoff_message_free(p)
	f, err := fromCMessage(p)
	return f.Message, err
}

// Encode writes m as a whole frame of the library's protocol version.
func Encode(m Message) ([]byte, error) {
	return EncodeFrame(Frame{Message: m})
}

// EncodeFrame writes f as a whole frame: the 4-byte length, the 2-byte
// version and the message.
func EncodeFrame(f Frame) ([]byte, error) {
	p, err := toCMessage(f)
	if err != nil {
		return nil, err
	}
	defer C.handoff_message_free(p)
	return encodeCMessage(p)
}

// Decode reads the frame at the start of buf. n is the frame's size (bytes
// after it are left alone). With only part of a frame, err is
// ErrIncomplete and n the number of bytes needed in all.
func Decode(buf []byte) (f Frame, n int, err error) {
	ptr, length := bytesArg(buf)
	var out *C.handoff_message
	var consumed C.size_t
	var cerr *C.handoff_error
	gcPoint()
	status := C.handoff_message_decode(ptr, length, &out, &consumed, &cerr)
	runtime.KeepAlive(buf)
	if err := check(status, cerr); err != nil {
		if status == C.HANDOFF_ERR_INCOMPLETE {
			return Frame{}, int(consumed), err
		}
		return Frame{}, 0, err
	}
	defer C.handoff_message_free(out)
	f, err = fromCMessage(out)
	if err != nil {
		return Frame{}, 0, err
	}
	return f, int(consumed), nil
}

func newCMessage(kind MessageKind) (*C.handoff_message, error) {
	var p *C.handoff_message
	var cerr *C.handoff_error
	if err := check(C.handoff_message_new(C.uint32_t(kind), &p, &cerr), cerr); err != nil {
		return nil, err
	}
	return p, nil
}

// toCMessage builds the C message of f; the caller frees it.
func toCMessage(f Frame) (*C.handoff_message, error) {
	if f.Message == nil {
		return nil, newError(StatusInvalidArgument, "no message to encode")
	}
	p, err := newCMessage(f.Message.Kind())
	if err != nil {
		return nil, err
	}
	m := cmsg{p}
	if f.Version != 0 {
		var cerr *C.handoff_error
		err = check(C.handoff_message_set_proto_version(p, C.uint16_t(f.Version), &cerr), cerr)
	}
	if err == nil {
		err = f.Message.put(m)
	}
	if err != nil {
		C.handoff_message_free(p)
		return nil, err
	}
	return p, nil
}

// fromCMessage copies every field of a C message into a Go one.
func fromCMessage(p *C.handoff_message) (Frame, error) {
	kind := MessageKind(C.handoff_message_kind(p))
	m := newDecodable(kind)
	if m == nil {
		return Frame{}, newError(StatusUnknownMessage, fmt.Sprintf("message kind %d", uint32(kind)))
	}
	if err := m.get(cmsg{p}); err != nil {
		return Frame{}, err
	}
	return Frame{Version: uint16(C.handoff_message_proto_version(p)), Message: m}, nil
}

func encodeCMessage(p *C.handoff_message) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		var needed C.size_t
		var cerr *C.handoff_error
		ptr, length := bytesArg(buf)
		status := C.handoff_message_encode(p, ptr, length, &needed, &cerr)
		err := check(status, cerr)
		if err == nil {
			return buf[:needed], nil
		}
		if status != C.HANDOFF_ERR_BUFFER_TOO_SMALL || int(needed) <= len(buf) {
			return nil, err
		}
		buf = make([]byte, needed)
	}
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// cmsg is the field accessors of one C message, used within one call.
type cmsg struct{ p *C.handoff_message }

func (m cmsg) setUint(field C.uint32_t, v uint64) error {
	var cerr *C.handoff_error
	return check(C.handoff_message_set_uint(m.p, field, C.uint64_t(v), &cerr), cerr)
}

func (m cmsg) getUint(field C.uint32_t, v *uint64) error {
	var out C.uint64_t
	var cerr *C.handoff_error
	if err := check(C.handoff_message_get_uint(m.p, field, &out, &cerr), cerr); err != nil {
		return err
	}
	*v = uint64(out)
	return nil
}

// getUint32 reads a u32 field (the library stores it as a uint that fits).
func (m cmsg) getUint32(field C.uint32_t, v *uint32) error {
	var wide uint64
	err := m.getUint(field, &wide)
	*v = uint32(wide)
	return err
}

func (m cmsg) setBool(field C.uint32_t, v bool) error {
	var cerr *C.handoff_error
	return check(C.handoff_message_set_bool(m.p, field, C.bool(v), &cerr), cerr)
}

func (m cmsg) getBool(field C.uint32_t, v *bool) error {
	var out C.bool
	var cerr *C.handoff_error
	if err := check(C.handoff_message_get_bool(m.p, field, &out, &cerr), cerr); err != nil {
		return err
	}
	*v = bool(out)
	return nil
}

func (m cmsg) setBytes(field C.uint32_t, b []byte) error {
	var cerr *C.handoff_error
	ptr, length := bytesArg(b)
	status := C.handoff_message_set_bytes(m.p, field, ptr, length, &cerr)
	runtime.KeepAlive(b)
	return check(status, cerr)
}

func (m cmsg) setString(field C.uint32_t, s string) error {
	return m.setBytes(field, []byte(s))
}

func (m cmsg) setID(id HandoffID) error {
	return m.setBytes(C.HANDOFF_FIELD_HANDOFF_ID, id[:])
}

// getBytes copies a byte field: the library lends it only until the
// message changes or is freed.
func (m cmsg) getBytes(field C.uint32_t, v *[]byte) error {
	var data *C.uint8_t
	var length C.size_t
	var cerr *C.handoff_error
	if err := check(C.handoff_message_get_bytes(m.p, field, &data, &length, &cerr), cerr); err != nil {
		return err
	}
	*v = goBytes(data, length)
	return nil
}

func (m cmsg) getString(field C.uint32_t, v *string) error {
	var b []byte
	if err := m.getBytes(field, &b); err != nil {
		return err
	}
	*v = string(b)
	return nil
}

func (m cmsg) getID(id *HandoffID) error {
	var b []byte
	if err := m.getBytes(C.HANDOFF_FIELD_HANDOFF_ID, &b); err != nil {
		return err
	}
	copy(id[:], b)
	return nil
}

// setUints replaces a list of integers.
func (m cmsg) setUints(field C.uint32_t, values []uint64) error {
	var cerr *C.handoff_error
	if err := check(C.handoff_message_clear_list(m.p, field, &cerr), cerr); err != nil {
		return err
	}
	for _, v := range values {
		if err := check(C.handoff_message_push_uint(m.p, field, C.uint64_t(v), &cerr), cerr); err != nil {
			return err
		}
	}
	return nil
}

// setStrings replaces a list of strings.
func (m cmsg) setStrings(field C.uint32_t, values []string) error {
	var cerr *C.handoff_error
	if err := check(C.handoff_message_clear_list(m.p, field, &cerr), cerr); err != nil {
		return err
	}
	for _, v := range values {
		b := []byte(v)
		ptr, length := bytesArg(b)
		status := C.handoff_message_push_bytes(m.p, field, ptr, length, &cerr)
		runtime.KeepAlive(b)
		if err := check(status, cerr); err != nil {
			return err
		}
	}
	return nil
}

func (m cmsg) listLen(field C.uint32_t) (int, error) {
	var n C.size_t
	var cerr *C.handoff_error
	if err := check(C.handoff_message_get_list_len(m.p, field, &n, &cerr), cerr); err != nil {
		return 0, err
	}
	return int(n), nil
}

func (m cmsg) getUints(field C.uint32_t, values *[]uint64) error {
	n, err := m.listLen(field)
	if err != nil {
		return err
	}
	if n == 0 {
		*values = nil
		return nil
	}
	out := make([]uint64, n)
	for i := range out {
		var v C.uint64_t
		var cerr *C.handoff_error
		if err := check(C.handoff_message_get_list_uint(m.p, field, C.size_t(i), &v, &cerr), cerr); err != nil {
			return err
		}
		out[i] = uint64(v)
	}
	*values = out
	return nil
}

func (m cmsg) getStrings(field C.uint32_t, values *[]string) error {
	n, err := m.listLen(field)
	if err != nil {
		return err
	}
	if n == 0 {
		*values = nil
		return nil
	}
	out := make([]string, n)
	for i := range out {
		var data *C.uint8_t
		var length C.size_t
		var cerr *C.handoff_error
		status := C.handoff_message_get_list_bytes(m.p, field, C.size_t(i), &data, &length, &cerr)
		if err := check(status, cerr); err != nil {
			return err
		}
		out[i] = string(goBytes(data, length))
	}
	*values = out
	return nil
}
