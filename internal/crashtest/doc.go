// Package crashtest holds the end-to-end crash test: it builds the real
// clinicbridge binary, loads it with signed webhooks, kills it with SIGKILL
// mid-stream, restarts it on the same data and checks that every webhook it
// acknowledged is still delivered. Its subpackage agentproc runs the binary
// as a child process and is shared with cmd/clinicbridge-load.
package crashtest
