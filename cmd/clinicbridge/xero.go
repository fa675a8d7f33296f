package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
	"github.com/clinicbridge/clinicbridge/connectors/xero"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// connectTimeout bounds how long `xero connect` waits for the browser.
const connectTimeout = 15 * time.Minute

func xeroCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "xero", Short: "Xero: connect an organisation (OAuth 2.0) for a xero connector"}
	var connector, listen string
	connect := &cobra.Command{
		Use:   "connect --connector NAME [--listen localhost:8765]",
		Short: "Authorize clinicbridge in Xero and store the token where the connector reads it (first grant, or after invalid_grant)",
		Long: `Runs Xero's authorization-code flow: prints a URL to open in a browser, serves the
redirect on http://<listen>/callback (register that exact URI on the Xero app), exchanges
the code and stores the token as the connector's state. A running agent (found through
admin.listen and admin.token) receives it through its admin API; when no agent is running,
the token is written to the store directly. Deliveries paused on invalid_grant resume at
their next check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return xeroConnect(cmd, g, connector, listen)
		},
	}
	connect.Flags().StringVar(&connector, "connector", "", "the xero connector's name in the config")
	connect.Flags().StringVar(&listen, "listen", "localhost:8765", "loopback address to receive Xero's redirect on")
	_ = connect.MarkFlagRequired("connector")
	cmd.AddCommand(connect)
	return cmd
}

func xeroConnect(cmd *cobra.Command, g *globals, name, listen string) error {
	out := cmd.OutOrStdout()
	cfg, err := config.Load(g.config, all.Registry(), config.Options{})
	if err != nil {
		return usageErr(err)
	}
	var cn *config.Connector
	for i := range cfg.Connectors {
		if cfg.Connectors[i].Name == name {
			cn = &cfg.Connectors[i]
		}
	}
	switch {
	case cn == nil:
		return usageErr(fmt.Errorf("no connector named %q in %s", name, g.config))
	case cn.Type != "xero":
		return usageErr(fmt.Errorf("connector %q is of type %s, not xero", name, cn.Type))
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()

	client, err := adminClient(g)
	if err != nil {
		return err
	}
	state := &connectState{admin: client, name: name, store: cfg.Store}
	defer state.close()
	// Find out now whether an agent holds the store, so a wrong admin token
	// or a store that cannot be opened stops us before the browser does.
	if err := state.pick(ctx); err != nil {
		return failureErr(err)
	}
	if state.direct != nil {
		fmt.Fprintf(out, "No agent answers at %s: the token will be written to the store directly.\n\n", client.Base)
	} else {
		fmt.Fprintf(out, "The agent at %s will receive the token.\n\n", client.Base)
	}

	if err := xero.Connect(ctx, cn.Node, state, listen, out); err != nil {
		return failureErr(err)
	}
	fmt.Fprintln(out)
	if state.direct != nil {
		fmt.Fprintf(out, "Next: start the agent (clinicbridge run -c %s); connector %s uses the token from its first delivery.\n", g.config, name)
	} else {
		fmt.Fprintf(out, "Next: nothing to restart. Deliveries to %s that were paused (invalid_grant, no token) resume at their next check, within a minute.\n", name)
		fmt.Fprintf(out, "Check with: clinicbridge deliveries list -c %s --state pending\n", g.config)
	}
	return nil
}

// connectState is the connector state `xero connect` stores the token in:
// the running agent's admin API (PUT /api/connectors/{name}/state/{key}),
// or, when no agent runs, the store itself.
type connectState struct {
	admin *server.Client
	name  string
	store config.Store

	direct connectors.State // set when no agent runs
	st     store.Store
}

var errNoAgent = errors.New("no agent answers on admin.listen")

// pick chooses where the token goes: the agent if its admin API answers,
// else the store, opened now.
func (s *connectState) pick(ctx context.Context) error {
	err := s.admin.Do(ctx, http.MethodGet, "/api/deliveries", url.Values{"limit": {"1"}}, nil, nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return s.openStore(ctx)
	default:
		return err
	}
}

func (s *connectState) openStore(ctx context.Context) error {
	st, err := store.Open(ctx, store.Params{
		Driver: s.store.Driver, Path: s.store.Path, URL: s.store.URL,
		EncryptionKeys: s.store.EncryptionKey, NoMigrate: !s.store.MigrateAtStart(),
	})
	if err != nil {
		return fmt.Errorf("no agent answers on admin.listen, and opening the store failed: %w", err)
	}
	s.st, s.direct = st, st.State(s.name)
	return nil
}

func (s *connectState) close() {
	if s.st != nil {
		_ = s.st.Close()
	}
}

// Put stores value exactly as given. If the agent stopped since pick, the
// store is opened instead.
func (s *connectState) Put(ctx context.Context, key string, value []byte) error {
	if s.direct == nil {
		err := s.put(ctx, key, value)
		if !errors.Is(err, errNoAgent) {
			return err
		}
		if err := s.openStore(ctx); err != nil {
			return err
		}
	}
	return s.direct.Put(ctx, key, value)
}

// put sends the raw value (not JSON-encoded again) to the admin API.
func (s *connectState) put(ctx context.Context, key string, value []byte) error {
	u := s.admin.Base + "/api/connectors/" + url.PathEscape(s.name) + "/state/" + url.PathEscape(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(value))
	if err != nil {
		return err
	}
	if s.admin.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.admin.Token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.admin.HTTP.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return errNoAgent
	}
	if err != nil {
		return fmt.Errorf("cannot reach the agent's admin API at %s: %w", s.admin.Base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return fmt.Errorf("admin API: %s", e.Error)
	}
	return nil
}

func (s *connectState) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if s.direct != nil {
		return s.direct.Get(ctx, key)
	}
	return nil, false, errors.New("reading connector state through the admin API is not supported")
}

func (s *connectState) Delete(ctx context.Context, key string) error {
	if s.direct != nil {
		return s.direct.Delete(ctx, key)
	}
	return errors.New("deleting connector state through the admin API is not supported")
}

var _ connectors.State = (*connectState)(nil)
