// Package agentproc runs the real clinicbridge binary as a child process, the
// way an operator does: built with `go build`, configured by a YAML file,
// stopped with SIGTERM or killed with SIGKILL. The crash test and the load
// tool (cmd/clinicbridge-load) share it so that both drive the agent through
// its public contract only (CLI, config, HTTP, logs) and never through
// internal packages, which would let them pass while the binary is broken.
package agentproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MainPackage is the agent's import path; building by import path works from
// any folder inside the module (the test's own, or the repository root).
const MainPackage = "github.com/clinicbridge/clinicbridge/cmd/clinicbridge"

// Build compiles the agent into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "clinicbridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, MainPackage)
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", MainPackage, err, msg.Bytes())
	}
	return out, nil
}

// Config is the part of an agent config that the crash test and the load tool
// vary. Everything else is fixed: one Standard Webhooks source called inbox,
// one http sink, and one route mapping marker, seq and sent_ns.
type Config struct {
	// Listen and Admin default to 127.0.0.1:0; Start then reads the bound
	// addresses from the "clinicbridge running" log line.
	Listen, Admin string
	// Store is sqlite (default) or postgres.
	Store string
	// SQLitePath defaults to ./data/cb.db, relative to the config's folder.
	SQLitePath  string
	PostgresURL string
	// Secret is the inbox's whsec_ secret.
	Secret string
	// SinkURL is where the http sink POSTs each mapped document.
	SinkURL string
	// When is the route's `when` expression (empty: every event is
	// delivered). "false" keeps the accept path alone: each event and its
	// ledger row are written, the row as skipped, and nothing is sent.
	When string
	// LogLevel defaults to info. Above info the running line is not logged,
	// so Listen must then be a fixed port.
	LogLevel string
}

// YAML renders the config file. Strings are quoted with strconv.Quote, whose
// output is a valid YAML double-quoted scalar for the ASCII values used here.
func (c Config) YAML() []byte {
	q := strconv.Quote
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	var when string
	if c.When != "" {
		when = "    when: " + q(c.When) + "\n"
	}
	var store string
	switch c.Store {
	case "postgres":
		store = fmt.Sprintf("{driver: postgres, url: %s}", q(c.PostgresURL))
	default:
		store = fmt.Sprintf("{driver: sqlite, path: %s}", q(or(c.SQLitePath, "./data/cb.db")))
	}
	return fmt.Appendf(nil, `version: 1
server: {listen: %s, max_body: 1MiB}
admin: {listen: %s}
store: %s
log: {level: %s, format: json}
connectors:
  inbox: {type: webhook, webhook_secret: %s}
  sink: {type: http, url: %s, timeout: 10s}
routes:
  - name: load
    from: inbox
    map: {fields: {marker: {from: payload.data.marker}, seq: {from: payload.data.seq}, sent_ns: {from: payload.data.sent_ns}}}
    to: sink
    retry: {max_attempts: 20, backoff: [100ms, 500ms, 1s]}
%s`, q(or(c.Listen, "127.0.0.1:0")), q(or(c.Admin, "127.0.0.1:0")), store, or(c.LogLevel, "info"), q(c.Secret), q(c.SinkURL), when)
}

// WriteConfig writes dir/clinicbridge.yaml and returns its path.
func WriteConfig(dir string, c Config) (string, error) {
	p := filepath.Join(dir, "clinicbridge.yaml")
	return p, os.WriteFile(p, c.YAML(), 0o600)
}

// FreePort returns a loopback address whose port was free a moment ago.
// There is a small race with other processes; use it only where the address
// must be known before the agent starts (a log level that hides the running
// line).
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Proc is a running agent.
type Proc struct {
	cmd *exec.Cmd
	log *logWriter

	// HooksAddr and AdminAddr are the bound listeners (host:port).
	HooksAddr, AdminAddr string

	done    chan struct{}
	waitErr error
}

// Options tune Start.
type Options struct {
	// Stderr receives the agent's log lines as written (may be nil).
	Stderr io.Writer
	// ReadyTimeout bounds the wait for the running line (default 60 s: the
	// first start migrates the database).
	ReadyTimeout time.Duration
	// Listen is the webhook address to probe when the log level hides the
	// running line (as in Config.Listen).
	Listen, Admin string
}

// Start runs `bin run -c cfgPath` and waits until the agent accepts webhooks.
func Start(ctx context.Context, bin, cfgPath string, opts Options) (*Proc, error) {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	// The agent runs in the config's folder; a relative binary path given
	// by the caller means relative to the caller's.
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	lw := &logWriter{out: opts.Stderr, ready: make(chan runningLine, 1)}
	cmd := exec.Command(bin, "run", "-c", cfgPath)
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Stdout = lw // River and the CLI write nothing there; if they do, it is kept
	cmd.Stderr = lw
	// If this process dies, take the agent with it: a load run or a test must
	// never leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, log: lw, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()

	ctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	if opts.Listen != "" {
		p.HooksAddr, p.AdminAddr = opts.Listen, opts.Admin
	} else {
		select {
		case l := <-lw.ready:
			p.HooksAddr, p.AdminAddr = l.Listen, l.Admin
		case <-p.done:
			return nil, fmt.Errorf("agent exited before it was ready (%v); last log lines:\n%s", p.waitErr, lw.Tail())
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("agent not ready after %s; last log lines:\n%s", opts.ReadyTimeout, lw.Tail())
		}
	}
	// The running line is logged once the listeners are bound; /readyz also
	// proves the store answers.
	for {
		if err := probe(ctx, "http://"+p.HooksAddr+"/readyz"); err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("agent exited before it was ready (%v); last log lines:\n%s", p.waitErr, lw.Tail())
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("agent /readyz not ok after %s; last log lines:\n%s", opts.ReadyTimeout, lw.Tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// HooksURL is the webhook endpoint of the inbox connector.
func (p *Proc) HooksURL() string { return "http://" + p.HooksAddr + "/hooks/inbox" }

// PID is the agent's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, then kills.
// It returns the exit error of a process that did not exit cleanly.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("agent did not stop within %s after SIGTERM; killed", timeout)
	}
}

// Tail returns the last log lines, for error messages.
func (p *Proc) Tail() string { return p.log.Tail() }

// LogCounts returns how many log lines the agent wrote, and how many of them
// were warnings and errors.
func (p *Proc) LogCounts() (lines, warns, errs int64) {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	return p.log.lines, p.log.warns, p.log.errs
}

// Memory reads the agent's resident set size and its high-water mark, in
// bytes, from /proc (Linux).
func (p *Proc) Memory() (rss, hwm int64, err error) {
	return ReadMemory(p.PID())
}

// ReadMemory reads VmRSS and VmHWM of pid from /proc/PID/status.
func ReadMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n * 1024
		} else {
			hwm = n * 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status (process gone?)")
	}
	return rss, hwm, nil
}

// CPU returns the agent's user+system CPU time so far.
func (p *Proc) CPU() (time.Duration, error) { return ReadCPU(p.PID()) }

// ReadCPU reads utime+stime of pid from /proc/PID/stat. The kernel counts
// in clock ticks; USER_HZ is 100 on every Linux this runs on.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

type runningLine struct {
	Message string `json:"message"`
	Listen  string `json:"listen"`
	Admin   string `json:"admin"`
}

// logWriter receives the agent's stderr: it forwards every byte, keeps the
// last lines for error messages, counts levels, and spots the running line.
// exec.Cmd copies the pipe into it from one goroutine; the mutex is for the
// readers.
type logWriter struct {
	out   io.Writer
	ready chan runningLine

	mu                 sync.Mutex
	partial            []byte
	tail               []string
	lines, warns, errs int64
	sawReady           bool
}

const tailLines = 30

func (w *logWriter) Write(b []byte) (int, error) {
	if w.out != nil {
		// A failing copy must not stop the reading: an agent whose stderr
		// pipe has no reader dies of SIGPIPE at its next log line.
		_, _ = w.out.Write(b)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	// Keep the buffer from growing without bound on a pathological line.
	if len(w.partial) > 1<<20 {
		w.partial = w.partial[:0]
	}
	return len(b), nil
}

func (w *logWriter) line(l []byte) {
	w.lines++
	switch {
	case bytes.Contains(l, []byte(`"level":"warn"`)):
		w.warns++
	case bytes.Contains(l, []byte(`"level":"error"`)), bytes.Contains(l, []byte(`"level":"fatal"`)), bytes.Contains(l, []byte(`"level":"panic"`)):
		w.errs++
	}
	if len(w.tail) == tailLines {
		w.tail = w.tail[1:]
	}
	w.tail = append(w.tail, string(l))
	if !w.sawReady && bytes.Contains(l, []byte(`"clinicbridge running"`)) {
		var r runningLine
		if json.Unmarshal(l, &r) == nil && r.Listen != "" {
			w.sawReady = true
			w.ready <- r
		}
	}
}

func (w *logWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}
