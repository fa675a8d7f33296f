// Package fakehttp holds what the connectors' fakes share about answering
// HTTP.
package fakehttp

import "net/http"

// RecordFirst wraps w so that record runs with the status just before the
// answer is written: a test that reads a fake's request log after its
// client got the answer then always finds the request there. (Recording
// after the handler returns races the client, which may already have read
// the answer and moved on.)
func RecordFirst(w http.ResponseWriter, record func(status int)) http.ResponseWriter {
	return &recordingWriter{ResponseWriter: w, record: record}
}

type recordingWriter struct {
	http.ResponseWriter
	record func(status int)
	done   bool
}

func (w *recordingWriter) WriteHeader(status int) {
	if !w.done {
		w.done = true
		w.record(status)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}
