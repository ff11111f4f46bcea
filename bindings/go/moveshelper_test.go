package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// A successor that adopts what moved (protocol v2): the test binary in
// helper mode "adopting", spawned by moves_test.go's in-process
// supervisor. It writes a JSON report (adoptReport) to HELPER_REPORT once
// it serves, or once it gave up.
//
//	HELPER_DATA, HELPER_CONTROL  the data dir and the control socket
//	HELPER_ELSEWHERE             another directory, locked to call Adopt
//	                             before Begin
//	HELPER_ADOPT=serve           adopt, AnnounceReady, then answer each
//	                             moved connection once: its carried output,
//	                             then "got <its carried input and the rest
//	                             of its line> from <pid>"
//	HELPER_ADOPT=exit            adopt, make each connection blocking (to
//	                             see the incumbent get its flags back), exit 1
//	HELPER_ADOPT=v1              do not adopt (protocol v1)

type adoptedConnReport struct {
	Network     string
	NonBlocking bool
	CloseOnExec bool
	FileAfter   bool   // AdoptedItem.File still set after Conn
	Again       string // status of a second Conn
}

type adoptReport struct {
	Pid                     int
	SetAdoptsAfterHandshake string
	AdoptBeforeBegin        string
	AdoptNil                string
	Begin                   string // the error of a failed WaitForBegin
	Adopt                   string // the error of a failed Adopt
	AdoptTwice              string
	FdsBefore, FdsAfter     []int
	Items                   []Item // what moved (Seq unused)
	Table                   string // the contents of the descriptor "table"
	TableCloseOnExec        bool
	ConnOfADescriptor       string
	Conns                   []adoptedConnReport
}

func (r *adoptReport) write() error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := os.Getenv("HELPER_REPORT")
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func openFDList() []int {
	entries, _ := os.ReadDir("/proc/self/fd")
	var fds []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	return fds
}

// fcntlOf is fcntl(fd, cmd) on c's descriptor.
func fcntlOf(c syscall.Conn, cmd int) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var flags uintptr
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), 0)
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(flags), nil
}

// setBlocking clears O_NONBLOCK on c's open file description.
func setBlocking(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}

func adoptingHelper() int {
	report := &adoptReport{Pid: os.Getpid()}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "adopting helper[%d]: %v\n", os.Getpid(), err)
		if werr := report.write(); werr != nil {
			fmt.Fprintf(os.Stderr, "adopting helper: writing the report: %v\n", werr)
		}
		return 1
	}
	mode := os.Getenv("HELPER_ADOPT")
	inherited, err := Detect()
	if err != nil {
		return fail(err)
	}
	successor, err := NewSuccessor(inherited)
	inherited.Close()
	if err != nil {
		return fail(err)
	}
	defer successor.Close()
	if err := successor.SetAdoptsDescriptors(mode != "v1"); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := successor.Handshake(ctx, []byte("adopting-helper")); err != nil {
		return fail(err)
	}
	report.SetAdoptsAfterHandshake = statusOf(successor.SetAdoptsDescriptors(false))
	other, err := AcquireLock(os.Getenv("HELPER_ELSEWHERE"))
	if err != nil {
		return fail(err)
	}
	_, err = successor.Adopt(other)
	report.AdoptBeforeBegin = statusOf(err)
	other.Close()
	report.FdsBefore = openFDList()
	if err := successor.WaitForBegin(ctx); err != nil {
		// What moved is refused as it arrives (a descriptor said to be
		// a connection that is not a socket).
		report.Begin = err.Error()
		report.FdsAfter = openFDList()
		return fail(err)
	}
	if err := successor.StartHeartbeats(); err != nil {
		return fail(err)
	}
	lock, err := AcquireLockWithRetry(ctx, os.Getenv("HELPER_DATA"))
	if err != nil {
		return fail(err)
	}
	defer lock.Close()
	var conns []net.Conn
	var items []AdoptedItem
	if mode != "v1" {
		if conns, items, err = adoptAll(successor, lock, report); err != nil {
			return fail(err)
		}
	}
	if mode == "exit" {
		for _, c := range conns {
			if err := setBlocking(c.(syscall.Conn)); err != nil {
				return fail(err)
			}
		}
		return fail(fmt.Errorf("exiting after adopting %d item(s), as asked", len(items)))
	}
	inc, err := successor.AnnounceReady(nil, os.Getenv("HELPER_CONTROL"), lock)
	if err != nil {
		return fail(err)
	}
	defer inc.Close()
	// From Ready on the moved connections are ours to serve.
	k := 0
	for _, item := range items {
		if item.Kind == ItemConnection {
			answerMoved(conns[k], item)
			k++
		}
	}
	return serveUntilTERM(inc, report)
}

// adoptAll adopts what moved and looks at it: the table's contents, each
// connection's kind and flags. Errors of the API go into the report.
func adoptAll(successor *Successor, lock *Lock, report *adoptReport) ([]net.Conn, []AdoptedItem, error) {
	_, err := successor.Adopt(nil)
	report.AdoptNil = statusOf(err)
	report.FdsBefore = openFDList()
	items, err := successor.Adopt(lock)
	if err != nil {
		report.Adopt = err.Error()
		report.FdsAfter = openFDList()
		return nil, nil, err
	}
	_, err = successor.Adopt(lock)
	report.AdoptTwice = statusOf(err)
	var conns []net.Conn
	for i := range items {
		item := &items[i]
		report.Items = append(report.Items, Item{ItemKind: item.Kind, Name: item.Name,
			Unread: item.Unread, Unwritten: item.Unwritten, State: item.State})
		if item.Kind == ItemDescriptor {
			if err := readTable(item, report); err != nil {
				return nil, nil, err
			}
			continue
		}
		c, err := item.Conn()
		if err != nil {
			// Give up as a service would: close (never shut down) what
			// was taken and every item left, so that nothing leaks.
			for _, c := range conns {
				c.Close()
			}
			for i := range items {
				items[i].Close()
			}
			report.Adopt = err.Error()
			report.FdsAfter = openFDList()
			return nil, nil, err
		}
		conns = append(conns, c)
		report.Conns = append(report.Conns, describeConn(c, item))
	}
	return conns, items, nil
}

func readTable(item *AdoptedItem, report *adoptReport) error {
	_, err := item.Conn()
	report.ConnOfADescriptor = statusOf(err)
	flags, err := fcntlOf(item.File, syscall.F_GETFD)
	if err != nil {
		return err
	}
	report.TableCloseOnExec = flags&syscall.FD_CLOEXEC != 0
	// The offset is shared with the incumbent's copy.
	b, err := io.ReadAll(io.NewSectionReader(item.File, 0, 1<<20))
	report.Table = string(b)
	return err
}

func describeConn(c net.Conn, item *AdoptedItem) adoptedConnReport {
	r := adoptedConnReport{Network: c.LocalAddr().Network(), FileAfter: item.File != nil}
	if fl, err := fcntlOf(c.(syscall.Conn), syscall.F_GETFL); err == nil {
		r.NonBlocking = fl&syscall.O_NONBLOCK != 0
	}
	if fd, err := fcntlOf(c.(syscall.Conn), syscall.F_GETFD); err == nil {
		r.CloseOnExec = fd&syscall.FD_CLOEXEC != 0
	}
	_, err := item.Conn()
	r.Again = statusOf(err)
	return r
}

// answerMoved writes the carried output, then completes the carried input
// up to a newline and answers it.
func answerMoved(c net.Conn, item AdoptedItem) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(item.Unwritten); err != nil {
		fmt.Fprintf(os.Stderr, "adopting helper: writing the carried output: %v\n", err)
		return
	}
	line := append([]byte{}, item.Unread...)
	for len(line) == 0 || line[len(line)-1] != '\n' {
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil {
			fmt.Fprintf(os.Stderr, "adopting helper: reading the rest of the line: %v\n", err)
			return
		}
		line = append(line, b[0])
	}
	fmt.Fprintf(c, "got %s from %d\n", line[:len(line)-1], os.Getpid())
}

func serveUntilTERM(inc *Incumbent, report *adoptReport) int {
	if err := inc.Start(nopService{}); err != nil {
		fmt.Fprintf(os.Stderr, "adopting helper: %v\n", err)
		return 1
	}
	if err := report.write(); err != nil {
		fmt.Fprintf(os.Stderr, "adopting helper: writing the report: %v\n", err)
		return 1
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	go func() {
		<-signals
		inc.Stop()
	}()
	if _, err := inc.Wait(context.Background()); err != nil {
		return 1
	}
	return 0
}

// memfd is an anonymous memory file holding contents.
func memfd(name, contents string) (*os.File, error) {
	var f *os.File
	nr := sysMemfdCreate // a variable: -1 is no uintptr
	if nr < 0 {
		tmp, err := os.CreateTemp("", name)
		if err != nil {
			return nil, err
		}
		os.Remove(tmp.Name())
		f = tmp
	} else {
		cname := append([]byte(name), 0)
		const mfdCloexec = 1
		fd, _, errno := syscall.Syscall(uintptr(nr), uintptr(unsafe.Pointer(&cname[0])), mfdCloexec, 0)
		if errno != 0 {
			return nil, fmt.Errorf("memfd_create: %w", errno)
		}
		f = os.NewFile(fd, name)
	}
	if _, err := f.WriteString(contents); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
