package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/clinicbridge/clinicbridge/config"
	"github.com/clinicbridge/clinicbridge/connectors"
	"github.com/clinicbridge/clinicbridge/connectors/all"
)

func fakeCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "fake TYPE",
		Short: "Run a connector type's fake system as a local server and print what it receives",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, ok := all.Registry().Lookup(args[0])
			if !ok || t.Fake == nil {
				var names []string
				for _, t := range all.Registry().Types() {
					if t.Fake != nil {
						names = append(names, t.Name)
					}
				}
				return usageErr(fmt.Errorf("no fake for %q (fakes: %v)", args[0], names))
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return failureErr(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fake %s listening on http://%s\n", t.Name, ln.Addr())
			srv := &http.Server{Handler: t.Fake(cmd.OutOrStdout()), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				ch := make(chan os.Signal, 1)
				signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
				<-ch
				srv.Close()
			}()
			if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
				return failureErr(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9090", "address to listen on")
	return cmd
}

func sendTestCmd(g *globals) *cobra.Command {
	var connector, eventType, payloadFile, target string
	cmd := &cobra.Command{
		Use:   "send-test",
		Short: "Sign a sample event exactly as the source system would and post it to the running agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := load(g, zerolog.Nop())
			if err != nil {
				return err
			}
			defer a.Close()
			var cn *config.Connector
			for i := range a.Config.Connectors {
				if a.Config.Connectors[i].Name == connector {
					cn = &a.Config.Connectors[i]
				}
			}
			if cn == nil {
				return usageErr(fmt.Errorf("no connector named %q in %s", connector, g.config))
			}
			t, _ := a.Registry.Lookup(cn.Type)
			if t.Sample == nil {
				return usageErr(fmt.Errorf("connector %q (type %s) has no sample events to send", connector, cn.Type))
			}
			var payload []byte
			if payloadFile != "" {
				if payload, err = os.ReadFile(payloadFile); err != nil {
					return usageErr(err)
				}
			}
			header, body, err := t.Sample(cn.Node, connectors.Env{Name: cn.Name, PublicURL: a.Config.Server.PublicURL, Dir: a.Config.Dir}, eventType, payload)
			if err != nil {
				return usageErr(err)
			}
			url := target
			if url == "" {
				url = hookURL(a.Config.Server.Listen, a.Config.Server.TLS != nil) + "/hooks/" + connector
			}
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return usageErr(err)
			}
			req.Header = header
			if req.Header.Get("Content-Type") == "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				return failureErr(fmt.Errorf("cannot reach the agent at %s (is `clinicbridge run` running?): %w", url, err))
			}
			defer resp.Body.Close()
			reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			fmt.Fprintf(cmd.OutOrStdout(), "POST %s -> %s %s", url, resp.Status, reply)
			if resp.StatusCode >= 300 {
				return failureErr(fmt.Errorf("the agent answered %s", resp.Status))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&connector, "connector", "", "source connector name in the config")
	cmd.Flags().StringVar(&eventType, "event", "", "event type to send (the type's default when empty)")
	cmd.Flags().StringVar(&payloadFile, "payload", "", "JSON body to sign instead of the built-in sample")
	cmd.Flags().StringVar(&target, "url", "", "post here instead of the config's server.listen")
	_ = cmd.MarkFlagRequired("connector")
	return cmd
}

// hookURL turns a listen address into a URL this machine can post to.
func hookURL(listen string, tls bool) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
