// Command clinicbridge receives webhooks from clinic systems, stores them
// durably, maps them and delivers them with retries and schedules. This
// package is the CLI only: flags, wiring and exit codes.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
)

// Exit codes: 0 ok, 1 failure, 2 usage or config error.
const (
	exitFailure = 1
	exitUsage   = 2
)

// exitError carries an exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error   { return &exitError{exitUsage, err} }
func failureErr(err error) error { return &exitError{exitFailure, err} }

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	code := exitUsage // cobra's own errors are flag and argument mistakes
	if errors.As(err, &ee) {
		code = ee.code
		err = ee.err
	}
	// A config problem prints one located error per line.
	for _, e := range config.AsErrors(err) {
		fmt.Fprintln(stderr, e)
	}
	return code
}

type globals struct {
	config string
	as     string // admin token name for admin verbs
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "clinicbridge",
		Short:         "Webhooks in, mapped deliveries out, nothing lost",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "clinicbridge.yaml", "config file")
	root.PersistentFlags().StringVar(&g.as, "as", "", "admin verbs: use this named token from admin.tokens (default: admin.token, else the first)")
	root.AddCommand(
		runCmd(g), validateCmd(g), migrateCmd(g), testCmd(g), mapCmd(g), schemaCmd(),
		eventsCmd(g), deliveriesCmd(g), replayCmd(g), reconcileCmd(g), auditCmd(g), purgeCmd(g), rekeyCmd(g), reloadCmd(g),
		fakeCmd(), sendTestCmd(g), xeroCmd(g), versionCmd(),
	)
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "clinicbridge", version)
		},
	}
}
