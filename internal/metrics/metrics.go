// Package metrics holds the agent's Prometheus metrics. One Metrics value per
// agent, registered on its own registry, so tests and several agents in one
// process never share counters.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/clinicbridge/clinicbridge/internal/store"
)

// Metrics are the agent's instruments. Labels carry connector and route names
// and outcomes, never payload values.
type Metrics struct {
	Registry *prometheus.Registry

	// Received counts webhooks by connector and outcome: accepted, duplicate,
	// unauthorized, malformed, too_large, unavailable, error.
	Received *prometheus.CounterVec
	// Deliveries counts finished attempts by route and outcome: succeeded,
	// retry, dead, skipped, cancelled.
	Deliveries *prometheus.CounterVec
	// Latency is from receipt of the event to a successful delivery.
	Latency *prometheus.HistogramVec

	// Circuit is each protected sink's breaker: 0 closed, 1 open, 2 half-open.
	Circuit *prometheus.GaugeVec

	// ReconcileRecovered counts events a reconciler found that no webhook brought.
	ReconcileRecovered *prometheus.CounterVec
	// ReconcileRuns counts runs by reconciler and outcome (ok, error).
	ReconcileRuns *prometheus.CounterVec
	// ReconcileDuration is how long runs take.
	ReconcileDuration *prometheus.HistogramVec
}

// New creates and registers the metrics. stats, when set, feeds queue gauges
// at scrape time.
func New(stats func(context.Context) (store.Stats, error)) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clinicbridge_webhooks_received_total",
			Help: "Webhooks received, by connector and outcome.",
		}, []string{"connector", "outcome"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clinicbridge_deliveries_total",
			Help: "Delivery attempts finished, by route and outcome.",
		}, []string{"route", "outcome"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clinicbridge_delivery_latency_seconds",
			Help:    "Time from receiving an event to delivering it, for immediate routes.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200},
		}, []string{"route"}),
	}
	m.Circuit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clinicbridge_circuit_state",
		Help: "Circuit breaker of a protected sink connector: 0 closed, 1 open, 2 half-open.",
	}, []string{"connector"})
	m.ReconcileRecovered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clinicbridge_reconcile_recovered_total",
		Help: "Events found by reconciliation that no webhook had delivered, by reconciler.",
	}, []string{"reconciler"})
	m.ReconcileRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clinicbridge_reconcile_runs_total",
		Help: "Reconcile runs, by reconciler and outcome (ok, error).",
	}, []string{"reconciler", "outcome"})
	m.ReconcileDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "clinicbridge_reconcile_run_duration_seconds",
		Help:    "Duration of reconcile runs, by reconciler.",
		Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300},
	}, []string{"reconciler"})
	reg.MustRegister(m.Received, m.Deliveries, m.Latency, m.ReconcileRecovered, m.ReconcileRuns, m.ReconcileDuration, m.Circuit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if stats != nil {
		reg.MustRegister(&queueCollector{stats: stats})
	}
	return m
}

var (
	depthDesc  = prometheus.NewDesc("clinicbridge_deliveries", "Deliveries in the ledger, by state.", []string{"state"}, nil)
	oldestDesc = prometheus.NewDesc("clinicbridge_oldest_pending_seconds", "Age of the oldest delivery that is due and not yet delivered.", nil, nil)
	upDesc     = prometheus.NewDesc("clinicbridge_store_up", "1 when the store answered the last scrape.", nil, nil)
)

// queueCollector reads the ledger at scrape time, so the gauges are never stale.
type queueCollector struct {
	stats func(context.Context) (store.Stats, error)
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- oldestDesc
	ch <- upDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	for _, s := range store.States {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(st.ByState[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, st.OldestPending.Seconds())
}
