// Package scaleout tests several real agents (the built binary) sharing one
// PostgreSQL: an agent killed and restarted mid-run, the database going away
// and coming back, a sink rate limit shared by all agents, and cron
// reconciliation run once per slot. The tests need CLINICBRIDGE_TEST_POSTGRES_URL.
package scaleout
