package handoff_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"libhandoff.dev/handoff"
)

func ExampleEncode() {
	frame, err := handoff.Encode(handoff.Heartbeat{TsMS: 1764000000123})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("% x\n", frame)
	decoded, n, err := handoff.Decode(frame)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes: %v %+v\n", n, decoded.Message.Kind(), decoded.Message)
	// Output:
	// 09 00 00 00 01 00 0d fb d0 df b4 ab 33
	// 13 bytes: Heartbeat &{TsMS:1764000000123}
}

// A service's start-up: a successor takes over only after Begin; a cold
// start takes its listener and lock at once. (drainable is the service's
// handoff.Drainable.)
func ExampleDetect() {
	var drainable handoff.Drainable
	inherited, err := handoff.Detect()
	if err != nil {
		log.Fatal(err)
	}
	var incumbent *handoff.Incumbent
	if inherited.IsSuccessor() {
		successor, err := handoff.NewSuccessor(inherited)
		inherited.Close()
		if err != nil {
			log.Fatal(err)
		}
		defer successor.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := successor.Handshake(ctx, []byte("my-service v2")); err != nil {
			log.Fatal(err)
		}
		if err := successor.WaitForBegin(ctx); err != nil {
			log.Fatal(err) // aborted: exit without touching the data directory
		}
		listener, err := successor.Listener("web", handoff.ListenerTCP)
		if err != nil {
			log.Fatal(err)
		}
		_ = listener // serve on it once Ready is announced
		lock, err := handoff.AcquireLockWithRetry(ctx, "/var/lib/my-service")
		if err != nil {
			log.Fatal(err)
		}
		defer lock.Close()
		// ... open the state ...
		ready := &handoff.Ready{ListeningOn: []string{"tcp://" + listener.Addr().String()}, HealthzOK: true}
		if incumbent, err = successor.AnnounceReady(ready, "/run/my-service.ctl", lock); err != nil {
			log.Fatal(err)
		}
	} else {
		listener, err := inherited.Listener("web", handoff.ListenerTCP)
		inherited.Close()
		if err != nil {
			log.Fatal(err)
		}
		_ = listener
		lock, err := handoff.AcquireLock("/var/lib/my-service")
		if err != nil {
			log.Fatal(err)
		}
		defer lock.Close()
		// ... open the state ...
		if incumbent, err = handoff.Bind("/run/my-service.ctl", lock); err != nil {
			log.Fatal(err)
		}
	}
	defer incumbent.Close()
	if err := incumbent.Start(drainable); err != nil {
		log.Fatal(err)
	}
	outcome, err := incumbent.Wait(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	if outcome == handoff.ServeCommitted {
		// a successor took over: finish the remaining reads and exit 0
	}
}
