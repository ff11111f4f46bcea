package handoff

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A handoff whose context is done rolls back at once, whatever it waits
// for (here: a successor that never says Hello, well within the 5 s Hello
// timeout), and says it was cancelled; the incumbent serves on and the
// next handoff commits.
func TestPerformHandoffContextCancels(t *testing.T) {
	c := newCluster(t, "ping")
	report := filepath.Join(c.dir, "report")
	c.start(helperSpec(c, "ok", report), "helper")

	silent := SpawnSpec{Binary: "/bin/sleep", Args: []string{"60"}, Deadline: 20 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	outcome, err := c.sup.PerformHandoffContext(ctx, silent)
	if err != nil {
		t.Fatalf("the handoff did not start: %v", err)
	}
	if outcome.Committed || outcome.AbortCause != CauseCancelled ||
		outcome.AbortParty != PartySupervisor || outcome.AbortStep != StepSpawn {
		t.Fatalf("outcome %+v, want a rollback by cancellation while spawning", outcome)
	}
	if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
		t.Fatalf("after the rollback PING answered by %d (%v), want the incumbent %d",
			pid, err, c.incumbent.process.Pid)
	}
	// The incumbent resumed fully: the next handoff commits.
	c.handOff(helperSpec(c, "ok", report), "helper")
	c.stop()
}
