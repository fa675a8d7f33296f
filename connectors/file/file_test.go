package file_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/connectortest"
	"github.com/clinicbridge/clinicbridge/connectors/file"
)

func build(t *testing.T, dir, cfg string) *file.Sink {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(cfg), &doc))
	require.Empty(t, config.Check("c.yaml", doc.Content[0], file.Type().Fields, "connectors.outbox"))
	s, err := file.Type().Build(doc.Content[0], connectors.Env{Name: "outbox", Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.(connectors.Closer).Close() })
	return s.(*file.Sink)
}

func delivery(i int) connectors.Delivery {
	return connectors.Delivery{
		Action:         "append",
		Document:       map[string]any{"to": "+447700900123", "body": fmt.Sprintf("Reminder %d for Jane Example", i)},
		IdempotencyKey: fmt.Sprintf("evt_%d:reminder", i),
		DeliveryID:     fmt.Sprintf("dlv_%d", i),
		EventID:        fmt.Sprintf("evt_%d", i),
		Route:          "reminder",
	}
}

func readLines(t *testing.T, path string) []file.Line {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []file.Line
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l file.Line
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "line %q", sc.Text())
		out = append(out, l)
	}
	require.NoError(t, sc.Err())
	return out
}

func TestContract(t *testing.T) {
	t.Parallel()
	connectortest.RunSink(t, connectortest.SinkHarness{
		Sink:     build(t, t.TempDir(), "path: out.jsonl"),
		Delivery: delivery(1),
	})
}

func TestAppendsOneLinePerDelivery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := build(t, dir, "path: data/out.jsonl")
	require.Equal(t, filepath.Join(dir, "data", "out.jsonl"), s.Path())

	rc, err := s.Do(context.Background(), delivery(1))
	require.NoError(t, err)
	require.Equal(t, "appended", rc.Status)
	d := delivery(2)
	d.Action = "" // the default action
	_, err = s.Do(context.Background(), d)
	require.NoError(t, err)

	lines := readLines(t, s.Path())
	require.Equal(t, []file.Line{
		{DeliveryID: "dlv_1", EventID: "evt_1", Route: "reminder", Action: "append", Document: map[string]any{"to": "+447700900123", "body": "Reminder 1 for Jane Example"}},
		{DeliveryID: "dlv_2", EventID: "evt_2", Route: "reminder", Action: "append", Document: map[string]any{"to": "+447700900123", "body": "Reminder 2 for Jane Example"}},
	}, lines)

	fi, err := os.Stat(s.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "documents hold patient data")
}

func TestConcurrentDeliveriesNeverInterleave(t *testing.T) {
	t.Parallel()
	s := build(t, t.TempDir(), "path: out.jsonl")
	big := make([]byte, 64<<10) // lines larger than a pipe buffer
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			d := delivery(i)
			d.Document["padding"] = string(big)
			_, err := s.Do(context.Background(), d)
			require.NoError(t, err)
		})
	}
	wg.Wait()
	lines := readLines(t, s.Path())
	require.Len(t, lines, 50)
	seen := map[string]bool{}
	for _, l := range lines {
		seen[l.DeliveryID] = true
	}
	require.Len(t, seen, 50)
}

func TestReopenAppends(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := build(t, dir, "path: out.jsonl")
	_, err := s.Do(context.Background(), delivery(1))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "closing twice is harmless")

	_, err = s.Do(context.Background(), delivery(2))
	require.Error(t, err)
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))

	s2 := build(t, dir, "path: "+filepath.Join(dir, "out.jsonl")) // absolute paths stay as they are
	_, err = s2.Do(context.Background(), delivery(3))
	require.NoError(t, err)
	require.Len(t, readLines(t, s2.Path()), 2)
}

func TestErrors(t *testing.T) {
	t.Parallel()
	s := build(t, t.TempDir(), "path: out.jsonl")
	_, err := s.Do(context.Background(), connectors.Delivery{Action: "send_sms"})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	_, err = s.Do(context.Background(), connectors.Delivery{Document: map[string]any{"Jane Example": make(chan int)}})
	require.Equal(t, connectors.Permanent, connectors.ClassOf(err))
	connectortest.NoLeak(t, err, "Jane Example")

	require.ErrorContains(t, (&file.Config{}).Validate(), "path: required")
	// Building touches no disk (validate builds connectors); an unwritable
	// path shows at the first delivery, as a transient failure.
	bad, err := file.New(&file.Config{Path: "x/out.jsonl"}, connectors.Env{Dir: "/proc/definitely-not-writable"})
	require.NoError(t, err)
	_, err = bad.Do(context.Background(), connectors.Delivery{Document: map[string]any{"a": 1}})
	require.Equal(t, connectors.Transient, connectors.ClassOf(err))
}
