package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/app"
)

// load loads the agent; a config problem is a usage error (exit 2).
func load(g *globals, log zerolog.Logger) (*app.Agent, error) {
	a, err := app.Load(g.config, all.Registry(), config.Options{}, log)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	return a, nil
}

func runCmd(g *globals) *cobra.Command {
	var shutdown time.Duration
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: receive webhooks, deliver, retry, schedule",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC()
			boot := app.NewLogger(config.Log{Level: "info", Format: "json"}, os.Stderr)
			a, err := load(g, boot)
			if err != nil {
				return err
			}
			defer a.Close()
			log := app.NewLogger(a.Config.Log, os.Stderr)
			for _, w := range a.Warnings {
				log.Warn().Msg(w)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := a.Run(ctx, log, app.RunOptions{ShutdownTimeout: shutdown}); err != nil {
				return failureErr(err)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 30*time.Second, "how long in-flight deliveries may take to finish on SIGTERM")
	return cmd
}

// agentGCPercent is the agent's GOGC unless the environment sets one. The
// agent's live heap is small (tens of MB) and every webhook allocates: at
// Go's default of 100 the collector took a tenth of the CPU under load.
// 400 cut the agent's CPU per webhook by ~13% in the load tool's ingest
// runs, for a peak heap a few times the live one (docs/operations.md);
// idle memory is unchanged. GOMEMLIMIT, when set, still caps it.
const agentGCPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}

func validateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check a config and its mappings without touching the network",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := load(g, zerolog.Nop())
			if err != nil {
				return err
			}
			defer a.Close()
			out := cmd.OutOrStdout()
			for _, w := range a.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			fmt.Fprintf(out, "%s: ok (%d connectors, %d routes, %d mappings)\n", g.config, len(a.Config.Connectors), len(a.Routes), len(a.Mappings))
			return nil
		},
	}
}

func migrateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Bring the store's schema up to this binary's (run before starting agents with store.migrate: false)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := load(g, zerolog.Nop())
			if err != nil {
				return err
			}
			defer a.Close()
			v, err := a.Migrate(cmd.Context())
			if err != nil {
				return failureErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s store schema is at version %d\n", a.Config.Store.Driver, v)
			return nil
		},
	}
}
