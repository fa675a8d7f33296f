package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// adminClient finds the running agent through admin.listen and admin.token.
func adminClient(g *globals) (*server.Client, error) {
	cfg, err := config.Load(g.config, all.Registry(), config.Options{})
	if err != nil {
		return nil, usageErr(err)
	}
	tokens := cfg.Admin.AllTokens()
	token := ""
	for _, t := range tokens {
		if g.as == "" || t.Name == g.as {
			token = t.Token
			break
		}
	}
	if g.as != "" && token == "" {
		return nil, usageErr(fmt.Errorf("--as %q: no admin token by that name in %s", g.as, g.config))
	}
	return server.NewClient(cfg.Admin.Listen, token), nil
}

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit log of admin actions (via the admin API)"}
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit entries, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct{ Entries []store.AuditEntry }
			if err := call(g, "GET", "/api/audit", url.Values{"limit": {strconv.Itoa(limit)}}, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ	AT	ACTOR	ACTION	TARGET	OUTCOME")
			for _, e := range out.Entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Format(time.RFC3339), e.Actor, e.Action, short(e.Target, 50), short(e.Outcome, 40))
			}
			return tw.Flush()
		},
	}
	list.Flags().IntVar(&limit, "limit", 50, "at most this many")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain; exits 1 and names the entry if it was tampered with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				OK      bool
				Entries int
				Seq     int64
				Error   string
			}
			if err := call(g, "GET", "/api/audit/verify", nil, nil, &out); err != nil {
				return err
			}
			if !out.OK {
				return failureErr(errors.New(out.Error))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit log ok: %d entries verified\n", out.Entries)
			return nil
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}

func call(g *globals, method, path string, q url.Values, body, out any) error {
	c, err := adminClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Do(ctx, method, path, q, body, out); err != nil {
		return failureErr(err)
	}
	return nil
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func eventsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "List and show stored events (via the admin API)"}
	var source, typ, since string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List recent events, newest first (no payloads)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"source": {source}, "type": {typ}, "since": {since}, "limit": {strconv.Itoa(limit)}}
			var out struct{ Events []store.EventRecord }
			if err := call(g, "GET", "/api/events", q, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RECEIVED\tSOURCE\tID\tTYPE\tKEY")
			for _, e := range out.Events {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.ReceivedAt.Format(time.RFC3339), e.Source, e.ID, e.Type, e.Key)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&source, "source", "", "only this source connector")
	list.Flags().StringVar(&typ, "type", "", "only this event type")
	list.Flags().StringVar(&since, "since", "", "RFC 3339 time, or a duration ago (24h)")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many")
	show := &cobra.Command{
		Use:   "show SOURCE ID",
		Short: "Show one event, its payload and its deliveries",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := call(g, "GET", "/api/events/"+url.PathEscape(args[0])+"/"+url.PathEscape(args[1]), nil, nil, &out); err != nil {
				return err
			}
			return printJSON(cmd, out)
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

func deliveriesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "deliveries", Short: "List and show deliveries (via the admin API)"}
	var route, state, since string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List deliveries, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"route": {route}, "state": {state}, "since": {since}, "limit": {strconv.Itoa(limit)}}
			var out struct{ Deliveries []store.Delivery }
			if err := call(g, "GET", "/api/deliveries", q, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROUTE\tSTATE\tATTEMPTS\tRUN AT\tEVENT\tLAST ERROR")
			for _, d := range out.Deliveries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.Route, d.State, d.Attempts, d.RunAt.Format(time.RFC3339), d.EventID, short(d.LastError, 60))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&route, "route", "", "only this route")
	list.Flags().StringVar(&state, "state", "", "scheduled | pending | succeeded | skipped | cancelled | dead")
	list.Flags().StringVar(&since, "since", "", "RFC 3339 time, or a duration ago (24h)")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one delivery",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := call(g, "GET", "/api/deliveries/"+url.PathEscape(args[0]), nil, nil, &out); err != nil {
				return err
			}
			return printJSON(cmd, out)
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

func short(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func replayCmd(g *globals) *cobra.Command {
	var route, since string
	cmd := &cobra.Command{
		Use:   "replay [DELIVERY_ID...]",
		Short: "Run deliveries again with the current config: given ids, or --route's dead ones",
		RunE: func(cmd *cobra.Command, ids []string) error {
			if (len(ids) == 0) == (route == "") {
				return usageErr(fmt.Errorf("give delivery ids, or --route (with optional --since)"))
			}
			req := server.ReplayRequest{IDs: ids, Route: route}
			if since != "" {
				t, err := time.Parse(time.RFC3339, since)
				if err != nil {
					d, derr := time.ParseDuration(since)
					if derr != nil {
						return usageErr(fmt.Errorf("--since: want RFC 3339 time or a duration ago (24h)"))
					}
					t = time.Now().Add(-d)
				}
				req.Since = t
			}
			var out struct{ Replayed []string }
			if err := call(g, "POST", "/api/replay", nil, req, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replayed %d deliveries\n", len(out.Replayed))
			for _, id := range out.Replayed {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&route, "route", "", "replay this route's dead deliveries")
	cmd.Flags().StringVar(&since, "since", "", "with --route: only those created since (RFC 3339 or a duration ago)")
	return cmd
}

func reconcileCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "reconcile", Short: "Run reconcilers and see their runs (via the admin API)"}
	runOne := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a reconciler now and print its report",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct{ Run store.Run }
			if err := call(g, "POST", "/api/reconcile/"+url.PathEscape(args[0])+"/run", nil, nil, &out); err != nil {
				return err
			}
			r := out.Run
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: listed %d, already known %d, recovered %d in %s\nwatermark %s -> %s\n",
				r.Name, r.ID, r.Listed, r.Known, r.Recovered, r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond),
				stamp(r.WatermarkBefore), stamp(r.WatermarkAfter))
			if r.Error != "" {
				return failureErr(fmt.Errorf("run failed (watermark kept): %s", r.Error))
			}
			return nil
		},
	}
	var name string
	var limit int
	runs := &cobra.Command{
		Use:   "runs",
		Short: "List recent reconcile runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct{ Runs []store.Run }
			if err := call(g, "GET", "/api/reconcile/runs", url.Values{"name": {name}, "limit": {strconv.Itoa(limit)}}, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STARTED\tRECONCILER\tTRIGGER\tLISTED\tKNOWN\tRECOVERED\tWATERMARK\tERROR")
			for _, r := range out.Runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.StartedAt.Format(time.RFC3339), r.Name, r.Trigger,
					r.Listed, r.Known, r.Recovered, stamp(r.WatermarkAfter), short(r.Error, 60))
			}
			return tw.Flush()
		},
	}
	runs.Flags().StringVar(&name, "name", "", "only this reconciler")
	runs.Flags().IntVar(&limit, "limit", 20, "at most this many")
	cmd.AddCommand(runOne, runs)
	return cmd
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func purgeCmd(g *globals) *cobra.Command {
	var subject string
	cmd := &cobra.Command{
		Use:   "purge --subject KEY",
		Short: "Erase one patient's or booking's payloads (an erasure request); its pending sends are cancelled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				return usageErr(errors.New("--subject is required"))
			}
			var out struct{ Purged int }
			if err := call(g, "POST", "/api/purge", nil, server.PurgeRequest{Subject: subject}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged the payloads of %d events about %s\n", out.Purged, subject)
			return nil
		},
	}
	cmd.Flags().StringVar(&subject, "subject", "", "the key of the patient or booking (an event key or a route key)")
	return cmd
}

func rekeyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rekey",
		Short: "Re-seal stored payloads and connector state with the newest store.encryption_key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct{ Resealed int }
			if err := call(g, "POST", "/api/rekey", nil, nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "re-sealed %d values with the newest key\n", out.Resealed)
			return nil
		},
	}
}

func reloadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the running agent re-read its config and mappings (as SIGHUP does); an invalid config is rejected and the old one stays",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := call(g, "POST", "/api/reload", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return nil
		},
	}
}
