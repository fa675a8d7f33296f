package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// catalog is the listed system: n appointments changed one after another,
// the oldest at base, spaced by step. Items are made on the fly from their
// index, so serving 100,000 of them costs no memory. Every item whose index
// is unseen(i) is "the 1%" whose webhook never arrived.
type catalog struct {
	n      int
	base   time.Time
	step   time.Duration
	every  int // every-th item is unseen (100 for 1 %); 0: none
	hiding atomic.Bool
}

func (c *catalog) unseen(i int) bool { return c.every > 0 && i%c.every == c.every/2 }

func (c *catalog) updated(i int) time.Time { return c.base.Add(time.Duration(i) * c.step) }

// visible is the listing order: every item, or, while hiding, every item but
// the unseen ones (what the webhooks brought before the measured run).
func (c *catalog) visible() func(pos int) (int, bool) {
	if !c.hiding.Load() || c.every == 0 {
		return func(pos int) (int, bool) { return pos, pos < c.n }
	}
	// Without the unseen ones each block of `every` items has every-1.
	per := c.every - 1
	return func(pos int) (int, bool) {
		block, off := pos/per, pos%per
		i := block*c.every + off
		if off >= c.every/2 {
			i++ // skip the unseen one in this block
		}
		return i, i < c.n
	}
}

// position is where item i (or, if it is hidden, the next one) stands in
// the listing order.
func (c *catalog) position(i int) int {
	if !c.hiding.Load() || c.every == 0 {
		return i
	}
	hidden := i / c.every // unseen items before i
	if i%c.every > c.every/2 {
		hidden++
	}
	return i - hidden
}

// item is one listed appointment, shaped like a practice system's API
// (Cliniko-like): a few hundred bytes of JSON.
type item struct {
	ID           string `json:"id"`
	PatientID    string `json:"patient_id"`
	Practitioner string `json:"practitioner_id"`
	Status       string `json:"status"`
	StartsAt     string `json:"starts_at"`
	EndsAt       string `json:"ends_at"`
	Type         string `json:"appointment_type"`
	Location     string `json:"location"`
	Notes        string `json:"notes"`
	CreatedAt    string `json:"created_at"`
	UpdatedAt    string `json:"updated_at"`
}

const itemTime = "2006-01-02T15:04:05.000Z07:00"

func (c *catalog) item(i int) item {
	u := c.updated(i).UTC()
	start := u.Add(48 * time.Hour).Truncate(15 * time.Minute)
	return item{
		ID: fmt.Sprintf("apt_%07d", i), PatientID: fmt.Sprintf("pat_%06d", i%40000), Practitioner: fmt.Sprintf("prac_%02d", i%12),
		Status: "booked", StartsAt: start.Format(itemTime), EndsAt: start.Add(30 * time.Minute).Format(itemTime),
		Type: "follow-up-consultation", Location: "North Clinic, 12 High Street",
		Notes:     "Patient asked for a morning slot; bring previous lab results.",
		CreatedAt: u.Add(-time.Hour).Format(itemTime), UpdatedAt: u.Format(itemTime),
	}
}

// ServeHTTP answers GET /items?updated_since=T&page=N&per_page=M with
// {"items": [...]}, oldest change first, as the poll connector reads it.
func (c *catalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/items" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	per, _ := strconv.Atoi(q.Get("per_page"))
	if page < 1 {
		page = 1
	}
	if per < 1 || per > 100 {
		per = 100
	}
	var since time.Time
	if s := q.Get("updated_since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(w, "updated_since: not RFC 3339", http.StatusBadRequest)
			return
		}
		since = t
	}
	first := 0 // the first listed position changed at or after since
	if !since.IsZero() && since.After(c.base) {
		first = c.position(int((since.Sub(c.base) + c.step - 1) / c.step))
	}
	at := c.visible()
	out := struct {
		Items []item `json:"items"`
	}{Items: make([]item, 0, per)}
	for pos := first + (page-1)*per; len(out.Items) < per; pos++ {
		i, ok := at(pos)
		if !ok {
			break
		}
		out.Items = append(out.Items, c.item(i))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// directLister lists the catalog without HTTP or JSON: it isolates the
// engine and the store from the connector (--lister direct).
type directLister struct {
	c    *catalog
	page int
}

func (d *directLister) Verify(*connectors.Request) error { return connectors.ErrUnauthorized }

func (d *directLister) Parse(*connectors.Request) (connectors.Inbound, error) {
	return connectors.Inbound{}, nil
}

func (d *directLister) List(ctx context.Context, p connectors.ListParams, yield func(connectors.Page) error) error {
	at := d.c.visible()
	var page connectors.Page
	for pos := 0; ; pos++ {
		i, ok := at(pos)
		if ok && !d.c.updated(i).Before(p.Since) {
			it := d.c.item(i)
			body, err := json.Marshal(it)
			if err != nil {
				return err
			}
			page.Events = append(page.Events, connectors.Event{
				ID: it.ID + "@" + it.UpdatedAt, Type: "appointment.updated", Key: it.ID,
				OccurredAt: d.c.updated(i), Payload: body,
			})
			page.Newest = d.c.updated(i)
		}
		if len(page.Events) == d.page || (!ok && len(page.Events) > 0) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := yield(page); err != nil {
				return err
			}
			page = connectors.Page{}
		}
		if !ok {
			return nil
		}
	}
}
