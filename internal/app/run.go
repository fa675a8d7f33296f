package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/internal/metrics"
	"github.com/clinicbridge/clinicbridge/internal/pipeline"
	"github.com/clinicbridge/clinicbridge/internal/reconcile"
	"github.com/clinicbridge/clinicbridge/internal/server"
	"github.com/clinicbridge/clinicbridge/internal/store"
)

// RunOptions tune Run.
type RunOptions struct {
	// ShutdownTimeout bounds how long in-flight deliveries may take to finish.
	ShutdownTimeout time.Duration
	// Ready, when set, is called with the bound addresses once both listeners
	// accept connections (tests listen on :0).
	Ready func(hooks, admin net.Addr)
	// PausedRecheck is how often deliveries to a paused connector (e.g. Xero
	// after invalid_grant) look again; default pipeline.DefaultPausedRecheck.
	// Tests shorten it.
	PausedRecheck time.Duration
}

// Run opens the store, starts the queue and both listeners, and serves until
// ctx ends; then it stops accepting, lets in-flight deliveries finish within
// the timeout, and returns nil.
func (a *Agent) Run(ctx context.Context, log zerolog.Logger, opts RunOptions) error {
	cfg := a.Config
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if len(cfg.Store.EncryptionKey) == 0 {
		log.Warn().Msg("store.encryption_key is not set: payloads are stored unencrypted; set one for patient data (docs/security.md)")
	}
	if err := server.CheckAdminListen(cfg.Admin.Listen, len(cfg.Admin.AllTokens())); err != nil {
		return err
	}
	var st store.Store
	m := metrics.New(func(ctx context.Context) (store.Stats, error) { return st.Stats(ctx) })
	pl := pipeline.New(pipeline.Params{Routes: a.Routes, Limits: a.Limits, Logger: log, Metrics: m, PausedRecheck: opts.PausedRecheck})
	rec := reconcile.New(a.Reconcilers, pl, log, m)
	st, err := store.Open(ctx, store.Params{
		Driver:         cfg.Store.Driver,
		Path:           cfg.Store.Path,
		URL:            cfg.Store.URL,
		Deliver:        pl.Deliver,
		Reconciler:     rec.Worker(),
		Periodic:       rec.Periodic(),
		EncryptionKeys: cfg.Store.EncryptionKey,
		AgentID:        cfg.Store.AgentID,
		NoMigrate:      !cfg.Store.MigrateAtStart(),
		Retention:      cfg.Store.Retention.Std(),
		Logger:         slog.New(zerologHandler{log.With().Str("component", "queue").Logger()}),
	})
	if err != nil {
		return err
	}
	defer st.Close()
	pl.SetStore(st)
	rec.SetStore(st)
	a.store.Store(&st)
	defer a.store.Store(nil)

	hooksLn, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		hooksLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	l := &live{first: a, pl: pl, st: st, log: log}
	l.cur.Store(a)
	defer func() {
		if cur := l.cur.Load(); cur != a {
			cur.Close()
		}
	}()
	hooks := &server.Hooks{
		Sources:   l.source,
		Accept:    pl,
		Ready:     st.Ping,
		MaxBody:   int64(cfg.Server.MaxBody),
		PublicURL: cfg.Server.PublicURL,
		Log:       log,
		Metrics:   m,
		Reconcile: rec.RunSource,
	}
	admin := &server.Admin{Store: st, Tokens: cfg.Admin.AllTokens(), Log: log, Metrics: m, Reconcile: rec.Run,
		Reload:     func(ctx context.Context, actor string) error { return l.reload(ctx, actor) },
		Connectors: func(name string) bool { _, ok := l.cur.Load().Connectors[name]; return ok }}
	hooksSrv := &http.Server{Handler: hooks.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	adminSrv := &http.Server{Handler: admin.Handler(), ReadHeaderTimeout: 10 * time.Second}

	// The queue's context must outlive ctx: a signal stops the agent through
	// st.Stop below, which lets running deliveries finish and record their
	// outcomes; cancelling the queue's context would cut them off mid-write.
	if err := st.Start(context.WithoutCancel(ctx)); err != nil {
		hooksLn.Close()
		adminLn.Close()
		return fmt.Errorf("queue: %w", err)
	}
	errc := make(chan error, 2)
	if t := cfg.Server.TLS; t != nil {
		tc, err := server.TLSConfig(server.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile})
		if err != nil {
			hooksLn.Close()
			adminLn.Close()
			return err
		}
		hooksLn = tls.NewListener(hooksLn, tc)
	}
	go func() { errc <- hooksSrv.Serve(hooksLn) }()
	go func() { errc <- adminSrv.Serve(adminLn) }()
	log.Info().Str("listen", hooksLn.Addr().String()).Str("admin", adminLn.Addr().String()).
		Str("store", cfg.Store.Driver).Int("routes", len(a.Routes)).Msg("clinicbridge running")
	if opts.Ready != nil {
		opts.Ready(hooksLn.Addr(), adminLn.Addr())
	}

	if err := l.watch(ctx); err != nil {
		log.Warn().Err(err).Msg("cannot watch the config for changes; use SIGHUP to reload")
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case runErr = <-errc:
			break wait
		case <-hup:
			_ = l.reload(ctx, "sighup") // logged and audited either way
		}
	}
	log.Info().Msg("shutting down: no new webhooks; finishing in-flight deliveries")
	stopCtx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	_ = hooksSrv.Shutdown(stopCtx)
	if err := st.Stop(stopCtx); err != nil {
		log.Warn().Err(err).Msg("queue did not stop cleanly; unfinished deliveries run again at the next start")
	}
	_ = adminSrv.Shutdown(stopCtx)
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	log.Info().Msg("stopped")
	return runErr
}

// zerologHandler sends River's slog records to our logger at warn and above,
// with their attributes (job ids and kinds, no payloads: args are delivery ids).
type zerologHandler struct{ log zerolog.Logger }

func (h zerologHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h zerologHandler) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.Warn()
	if r.Level >= slog.LevelError {
		ev = h.log.Error()
	}
	r.Attrs(func(a slog.Attr) bool {
		ev = ev.Str(a.Key, a.Value.String())
		return true
	})
	ev.Msg(r.Message)
	return nil
}

func (h zerologHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	ctx := h.log.With()
	for _, a := range attrs {
		ctx = ctx.Str(a.Key, a.Value.String())
	}
	return zerologHandler{ctx.Logger()}
}

func (h zerologHandler) WithGroup(string) slog.Handler { return h }
