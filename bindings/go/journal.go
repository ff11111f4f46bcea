package handoff

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import "fmt"

// Phase is how far a journalled handoff got (HANDOFF_PHASE_*).
type Phase uint32

const (
	PhaseNegotiating        = Phase(C.HANDOFF_PHASE_NEGOTIATING)
	PhaseDraining           = Phase(C.HANDOFF_PHASE_DRAINING)
	PhaseSealing            = Phase(C.HANDOFF_PHASE_SEALING)
	PhaseAwaitingReady      = Phase(C.HANDOFF_PHASE_AWAITING_READY)
	PhaseCommitted          = Phase(C.HANDOFF_PHASE_COMMITTED)
	PhaseResumingAfterAbort = Phase(C.HANDOFF_PHASE_RESUMING_AFTER_ABORT)
)

func (p Phase) String() string {
	names := [...]string{"Negotiating", "Draining", "Sealing", "AwaitingReady", "Committed", "ResumingAfterAbort"}
	if int(p) < len(names) {
		return names[p]
	}
	return fmt.Sprintf("Phase(%d)", uint32(p))
}

// Journal is the supervisor's crash-recovery record.
type Journal struct {
	HandoffID    HandoffID
	Phase        Phase
	IncumbentPID uint32 // the incumbent's real pid
	// SuccessorPID is meaningful only when HasSuccessorPID is true.
	HasSuccessorPID bool
	SuccessorPID    uint32
	StartedAtUnixMS uint64
}

func (j Journal) toC() C.handoff_journal {
	var c C.handoff_journal
	for i, b := range j.HandoffID {
		c.handoff_id[i] = C.uint8_t(b)
	}
	c.phase = C.uint32_t(j.Phase)
	c.incumbent_pid = C.uint32_t(j.IncumbentPID)
	c.has_successor_pid = C.bool(j.HasSuccessorPID)
	c.successor_pid = C.uint32_t(j.SuccessorPID)
	c.started_at_unix_ms = C.uint64_t(j.StartedAtUnixMS)
	return c
}

func journalFromC(c *C.handoff_journal) Journal {
	var j Journal
	for i := range j.HandoffID {
		j.HandoffID[i] = byte(c.handoff_id[i])
	}
	j.Phase = Phase(c.phase)
	j.IncumbentPID = uint32(c.incumbent_pid)
	j.HasSuccessorPID = bool(c.has_successor_pid)
	if j.HasSuccessorPID {
		j.SuccessorPID = uint32(c.successor_pid)
	}
	j.StartedAtUnixMS = uint64(c.started_at_unix_ms)
	return j
}

// WriteJournal replaces the journal at path durably (write <path>.tmp,
// fsync, rename, fsync the directory, created if missing). On failure the
// previous journal is intact; a phase out of range is ErrInvalidArgument.
func WriteJournal(path string, j Journal) error {
	cpath, err := cString(path, "journal path")
	if err != nil {
		return err
	}
	defer freeCString(cpath)
	c := j.toC()
	var cerr *C.handoff_error
	gcPoint()
	return check(C.handoff_journal_write(cpath, &c, &cerr), cerr)
}

// ReadJournal reads the journal at path; found is false when there is
// none. A corrupt file is ErrJournalCorrupt, naming it.
func ReadJournal(path string) (j Journal, found bool, err error) {
	cpath, err := cString(path, "journal path")
	if err != nil {
		return Journal{}, false, err
	}
	defer freeCString(cpath)
	var c C.handoff_journal
	var cfound C.bool
	var cerr *C.handoff_error
	gcPoint()
	if err := check(C.handoff_journal_read(cpath, &c, &cfound, &cerr), cerr); err != nil {
		return Journal{}, false, err
	}
	if !cfound {
		return Journal{}, false, nil
	}
	return journalFromC(&c), true, nil
}

// DeleteJournal removes the journal at path; a missing one is not an error.
func DeleteJournal(path string) error {
	cpath, err := cString(path, "journal path")
	if err != nil {
		return err
	}
	defer freeCString(cpath)
	var cerr *C.handoff_error
	gcPoint()
	return check(C.handoff_journal_delete(cpath, &cerr), cerr)
}
