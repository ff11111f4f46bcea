package handoff

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// SpawnSpec is what to run for a generation of the service, and the
// budgets of a handoff to it.
type SpawnSpec struct {
	// Binary is a path, or a name looked up in PATH.
	Binary string
	Args   []string
	// Env holds "KEY=value" entries set for the child on top of the
	// supervisor's own environment.
	Env []string
	// Deadline is the whole handoff's, trigger to commit (0: the library's
	// default, 60 s); DrainGrace the incumbent's drain budget (0: 25 s).
	Deadline, DrainGrace time.Duration
}

// The library's defaults (handoff_spawn_spec_new), needed when only one of
// the two budgets is given.
const (
	defaultDeadline   = 60 * time.Second
	defaultDrainGrace = 25 * time.Second
)

// toC builds the C spec; the caller frees it.
func (s SpawnSpec) toC() (*C.handoff_spawn_spec, error) {
	binary, err := cString(s.Binary, "binary")
	if err != nil {
		return nil, err
	}
	defer freeCString(binary)
	var p *C.handoff_spawn_spec
	var cerr *C.handoff_error
	if err := check(C.handoff_spawn_spec_new(binary, &p, &cerr), cerr); err != nil {
		return nil, err
	}
	if err := s.fill(p); err != nil {
		C.handoff_spawn_spec_free(p)
		return nil, err
	}
	return p, nil
}

func (s SpawnSpec) fill(p *C.handoff_spawn_spec) error {
	var cerr *C.handoff_error
	for _, arg := range s.Args {
		carg, err := cString(arg, "argument")
		if err != nil {
			return err
		}
		err = check(C.handoff_spawn_spec_add_arg(p, carg, &cerr), cerr)
		freeCString(carg)
		if err != nil {
			return err
		}
	}
	for _, kv := range s.Env {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			return newError(StatusInvalidArgument, fmt.Sprintf("environment entry %q is not KEY=value", kv))
		}
		ckey, err := cString(key, "environment variable name")
		if err != nil {
			return err
		}
		cvalue, err := cString(value, "environment variable value")
		if err != nil {
			freeCString(ckey)
			return err
		}
		err = check(C.handoff_spawn_spec_set_env(p, ckey, cvalue, &cerr), cerr)
		freeCString(ckey)
		freeCString(cvalue)
		if err != nil {
			return err
		}
	}
	if s.Deadline != 0 || s.DrainGrace != 0 {
		deadline, grace := s.Deadline, s.DrainGrace
		if deadline == 0 {
			deadline = defaultDeadline
		}
		if grace == 0 {
			grace = defaultDrainGrace
		}
		if deadline < 0 || grace < 0 {
			return newError(StatusInvalidArgument, "budgets must be positive")
		}
		dms := (deadline + time.Millisecond - 1) / time.Millisecond
		gms := (grace + time.Millisecond - 1) / time.Millisecond
		return check(C.handoff_spawn_spec_set_budgets(p, C.uint64_t(dms), C.uint64_t(gms), &cerr), cerr)
	}
	return nil
}

// Timeouts are the supervisor's; a zero field keeps the library's default
// (liveness 10 s, hello 5 s, kill grace 2 s).
type Timeouts struct {
	// Liveness: no frame from a peer for this long means it is dead.
	Liveness time.Duration
	// Hello: how long a peer has to send its Hello.
	Hello time.Duration
	// KillGrace: SIGTERM to SIGKILL for a successor that must go.
	KillGrace time.Duration
}

// PhaseTimings are how long each phase of a handoff took.
type PhaseTimings struct {
	Hello  time.Duration // connect to the incumbent and exchange Hello
	Spawn  time.Duration // spawn the successor and exchange its Hello
	Drain  time.Duration // PrepareHandoff to Drained
	Seal   time.Duration // SealRequest to SealComplete
	Ready  time.Duration // Begin to Ready
	Commit time.Duration // Commit and journal clear
	Total  time.Duration
}

// Step is a step of a handoff: where a rollback happened.
type Step uint32

const (
	StepNone   Step = C.HANDOFF_STEP_NONE
	StepHello  Step = C.HANDOFF_STEP_HELLO
	StepSpawn  Step = C.HANDOFF_STEP_SPAWN
	StepDrain  Step = C.HANDOFF_STEP_DRAIN
	StepSeal   Step = C.HANDOFF_STEP_SEAL
	StepReady  Step = C.HANDOFF_STEP_READY
	StepCommit Step = C.HANDOFF_STEP_COMMIT
)

// Party is who caused a rollback.
type Party uint32

const (
	PartyNone       Party = C.HANDOFF_PARTY_NONE
	PartyIncumbent  Party = C.HANDOFF_PARTY_INCUMBENT
	PartySuccessor  Party = C.HANDOFF_PARTY_SUCCESSOR
	PartySupervisor Party = C.HANDOFF_PARTY_SUPERVISOR
)

// Cause is what caused a rollback (the header documents each); a library
// newer than this binding may report a value not listed here.
type Cause uint32

const (
	CauseNone       Cause = C.HANDOFF_CAUSE_NONE
	CauseSpawn      Cause = C.HANDOFF_CAUSE_SPAWN
	CauseExited     Cause = C.HANDOFF_CAUSE_EXITED
	CauseClosed     Cause = C.HANDOFF_CAUSE_CLOSED
	CauseSilent     Cause = C.HANDOFF_CAUSE_SILENT
	CauseDeadline   Cause = C.HANDOFF_CAUSE_DEADLINE
	CauseSealFailed Cause = C.HANDOFF_CAUSE_SEAL_FAILED
	CauseProtocol   Cause = C.HANDOFF_CAUSE_PROTOCOL
	CauseIO         Cause = C.HANDOFF_CAUSE_IO
	CauseJournal    Cause = C.HANDOFF_CAUSE_JOURNAL
	CauseCancelled  Cause = C.HANDOFF_CAUSE_CANCELLED
	CauseLimit      Cause = C.HANDOFF_CAUSE_LIMIT
)

// Outcome is the result of a handoff that reached the incumbent.
type Outcome struct {
	HandoffID HandoffID
	Committed bool
	// AbortReason says why it rolled back ("" when committed), for people;
	// AbortStep, AbortParty and AbortCause for programs (None when
	// committed).
	AbortReason  string
	AbortStep    Step
	AbortParty   Party
	AbortCause   Cause
	IncumbentPID int
	// Successor is the new incumbent when committed (else nil): a child of
	// this process, for the caller to Wait for.
	Successor *os.Process
	Timings   PhaseTimings
}

// Supervisor keeps the listeners for the whole life of the service and
// hands it off. Configure it (AddListener, SetJournal, SetTimeouts) before
// use (configuring waits for running calls); PerformHandoff may be called
// from any goroutine (a second one while one runs is ErrHandoffInProgress).
type Supervisor struct {
	h object[*C.handoff_supervisor]
}

// NewSupervisor is a supervisor for the service whose incumbent serves
// controlPath.
func NewSupervisor(controlPath string) (*Supervisor, error) {
	cpath, err := cString(controlPath, "control socket path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	var p *C.handoff_supervisor
	var cerr *C.handoff_error
	gcPoint()
	if err := check(C.handoff_supervisor_new(cpath, &p, &cerr), cerr); err != nil {
		return nil, err
	}
	s := &Supervisor{h: object[*C.handoff_supervisor]{p: p, what: "supervisor"}}
	runtime.SetFinalizer(s, (*Supervisor).Close)
	return s, nil
}

// AddListener hands a listening socket to every generation as name. The
// supervisor keeps its own duplicate: the caller may close l. l is a
// *net.TCPListener, *net.UnixListener, *net.UDPConn, *os.File or anything
// else with a descriptor. A socket made by Go's net package is
// non-blocking, and so is then every generation's copy (they share it).
func (s *Supervisor) AddListener(name string, l syscall.Conn) error {
	raw, err := l.SyscallConn()
	if err != nil {
		return newError(StatusListener, fmt.Sprintf("listener %s: %v", name, err))
	}
	cname, err := cString(name, "listener name")
	if err != nil {
		return err
	}
	defer freeCString(cname)
	var added error
	// Alone: configuration is not synchronised with handoffs.
	err = s.h.alone(func(p *C.handoff_supervisor) error {
		return raw.Control(func(fd uintptr) {
			var cerr *C.handoff_error
			added = check(C.handoff_supervisor_add_listener(p, cname, C.int32_t(fd), &cerr), cerr)
		})
	})
	runtime.KeepAlive(s)
	runtime.KeepAlive(l)
	if err != nil {
		return err
	}
	return added
}

// SetJournal records each step of a handoff in the journal at path
// (conventionally /var/lib/handoff/<service>/state.bin).
func (s *Supervisor) SetJournal(path string) error {
	cpath, err := cString(path, "journal path")
	if err != nil {
		return err
	}
	defer freeCString(cpath)
	err = s.h.alone(func(p *C.handoff_supervisor) error {
		var cerr *C.handoff_error
		return check(C.handoff_supervisor_set_journal(p, cpath, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return err
}

// SetTimeouts sets the supervisor's timeouts.
func (s *Supervisor) SetTimeouts(t Timeouts) error {
	var ms [3]C.uint32_t
	for k, d := range []time.Duration{t.Liveness, t.Hello, t.KillGrace} {
		if d == 0 {
			continue
		}
		v, err := millis32(d, "timeout")
		if err != nil {
			return err
		}
		ms[k] = v
	}
	err := s.h.alone(func(p *C.handoff_supervisor) error {
		var cerr *C.handoff_error
		return check(C.handoff_supervisor_set_timeouts(p, ms[0], ms[1], ms[2], &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return err
}

// SpawnCold starts the first generation of the service (a cold start,
// with the listeners): a child of this process, for the caller to Wait for.
func (s *Supervisor) SpawnCold(spec SpawnSpec) (*os.Process, error) {
	cspec, err := spec.toC()
	if err != nil {
		return nil, err
	}
	defer C.handoff_spawn_spec_free(cspec)
	var pid C.uint32_t
	err = s.h.shared(func(p *C.handoff_supervisor) error {
		var cerr *C.handoff_error
		return check(C.handoff_supervisor_spawn_cold(p, cspec, &pid, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	return os.FindProcess(int(pid))
}

// PerformHandoff hands the service off to a new process run from spec. A
// rollback is an Outcome with Committed false; an error means the handoff
// never started (no incumbent answering, one already in progress). It
// blocks until the handoff ends, within spec's deadline.
func (s *Supervisor) PerformHandoff(spec SpawnSpec) (*Outcome, error) {
	return s.PerformHandoffContext(context.Background(), spec)
}

// PerformHandoffContext is PerformHandoff, rolled back at once when ctx is
// done first (the Outcome's AbortCause is then CauseCancelled).
func (s *Supervisor) PerformHandoffContext(ctx context.Context, spec SpawnSpec) (*Outcome, error) {
	cspec, err := spec.toC()
	if err != nil {
		return nil, err
	}
	defer C.handoff_spawn_spec_free(cspec)
	if ctx.Done() != nil {
		finished := make(chan struct{})
		cancelled := make(chan struct{})
		defer func() { close(finished); <-cancelled }()
		go func() {
			defer close(cancelled)
			select {
			case <-ctx.Done():
				_ = s.h.shared(func(p *C.handoff_supervisor) error {
					C.handoff_supervisor_cancel(p)
					return nil
				})
			case <-finished:
			}
		}()
	}
	var out *C.handoff_outcome
	// Shared: handoffs may be requested concurrently (the library refuses
	// the second one).
	err = s.h.shared(func(p *C.handoff_supervisor) error {
		var cerr *C.handoff_error
		return check(C.handoff_supervisor_perform_handoff(p, cspec, &out, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	defer C.handoff_outcome_free(out)
	return outcomeFromC(out)
}

func outcomeFromC(out *C.handoff_outcome) (*Outcome, error) {
	o := &Outcome{
		Committed:    bool(C.handoff_outcome_committed(out)),
		IncumbentPID: int(C.handoff_outcome_incumbent_pid(out)),
	}
	if reason := C.handoff_outcome_abort_reason(out); reason != nil {
		o.AbortReason = C.GoString(reason) // borrowed from the outcome
	}
	o.AbortStep = Step(C.handoff_outcome_abort_step(out))
	o.AbortParty = Party(C.handoff_outcome_abort_party(out))
	o.AbortCause = Cause(C.handoff_outcome_abort_cause(out))
	var cerr *C.handoff_error
	var id [16]C.uint8_t
	if err := check(C.handoff_outcome_handoff_id(out, &id[0], &cerr), cerr); err != nil {
		return nil, err
	}
	for k, b := range id {
		o.HandoffID[k] = byte(b)
	}
	var t C.handoff_phase_timings
	if err := check(C.handoff_outcome_timings(out, &t, &cerr), cerr); err != nil {
		return nil, err
	}
	us := func(v C.uint64_t) time.Duration { return time.Duration(v) * time.Microsecond }
	o.Timings = PhaseTimings{
		Hello: us(t.hello_us), Spawn: us(t.spawn_us), Drain: us(t.drain_us), Seal: us(t.seal_us),
		Ready: us(t.ready_us), Commit: us(t.commit_us), Total: us(t.total_us),
	}
	if pid := C.handoff_outcome_successor_pid(out); pid != 0 {
		p, err := os.FindProcess(int(pid))
		if err != nil {
			return nil, err
		}
		o.Successor = p
	}
	return o, nil
}

// ResumeFromJournal is for a supervisor that restarts: it finishes or rolls
// back a handoff the journal shows in flight, then clears the journal.
// recovered says whether there was one, committed whether its successor
// had become the incumbent.
func (s *Supervisor) ResumeFromJournal() (recovered, committed bool, err error) {
	var crecovered, ccommitted C.bool
	err = s.h.shared(func(p *C.handoff_supervisor) error {
		var cerr *C.handoff_error
		return check(C.handoff_supervisor_resume_from_journal(p, &crecovered, &ccommitted, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return bool(crecovered), bool(ccommitted), err
}

// Close frees the supervisor, closing its listener duplicates, once a
// running PerformHandoff has returned. Idempotent.
func (s *Supervisor) Close() error {
	runtime.SetFinalizer(s, nil)
	C.handoff_supervisor_free(s.h.take())
	return nil
}
