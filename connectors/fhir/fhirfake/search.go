package fhirfake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	defaultCount = 20
	maxCount     = 1000
	maxPageRefs  = 1000
)

// searchParams is a parsed search.
type searchParams struct {
	filters []func(rec *record, v *version) bool
	count   int
	sort    string // "", "_lastUpdated", "-_lastUpdated"
}

// ignored are parameters the fake accepts and does nothing with.
var ignored = map[string]bool{"_format": true, "_pretty": true, "_total": true, "_summary": true, "_elements": true}

// parseSearch reads the search parameters the fake supports; any other
// parameter is a 400, as HAPI answers by default.
func parseSearch(typ string, q url.Values) (searchParams, *Outcome) {
	sp := searchParams{count: defaultCount}
	for name, values := range q {
		if ignored[name] {
			continue
		}
		for _, val := range values {
			switch name {
			case "_count":
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return sp, outcome(http.StatusBadRequest, "invalid", "Invalid _count")
				}
				sp.count = min(n, maxCount)
			case "_sort":
				if val != "_lastUpdated" && val != "-_lastUpdated" {
					return sp, outcome(http.StatusBadRequest, "not-supported", fmt.Sprintf("Unsupported _sort %q", val))
				}
				sp.sort = val
			case "_lastUpdated":
				f, oo := dateFilter(val)
				if oo != nil {
					return sp, oo
				}
				sp.filters = append(sp.filters, func(_ *record, v *version) bool { return f(v.lastUpdated) })
			case "_id":
				ids := strings.Split(val, ",")
				sp.filters = append(sp.filters, func(rec *record, _ *version) bool { return contains(ids, rec.id) })
			case "identifier":
				vals := strings.Split(val, ",")
				sp.filters = append(sp.filters, func(_ *record, v *version) bool {
					return anyOf(vals, func(t string) bool { return identifierMatches(v.res, t) })
				})
			case "status":
				vals := strings.Split(val, ",")
				sp.filters = append(sp.filters, func(_ *record, v *version) bool {
					s, _ := v.res["status"].(string)
					return anyOf(vals, func(t string) bool {
						if _, code, ok := strings.Cut(t, "|"); ok {
							t = code
						}
						return s == t
					})
				})
			case "patient", "subject":
				vals := strings.Split(val, ",")
				sp.filters = append(sp.filters, func(_ *record, v *version) bool {
					return anyOf(vals, func(t string) bool { return referencesPatient(v.res, name, t) })
				})
			default:
				return sp, outcome(http.StatusBadRequest, "not-supported",
					fmt.Sprintf("Unknown search parameter %q for resource type %q", name, typ))
			}
		}
	}
	return sp, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func anyOf(list []string, f func(string) bool) bool {
	for _, x := range list {
		if f(x) {
			return true
		}
	}
	return false
}

// identifierMatches is the token search on identifier: `system|value`,
// `|value` (no system), `system|` (any value) or `value` (any system).
func identifierMatches(res map[string]any, token string) bool {
	ids, _ := res["identifier"].([]any)
	sys, val, hasSys := strings.Cut(token, "|")
	if !hasSys {
		val, sys = token, ""
	}
	for _, x := range ids {
		id, _ := x.(map[string]any)
		s, _ := id["system"].(string)
		v, _ := id["value"].(string)
		switch {
		case !hasSys && v == val:
			return true
		case hasSys && val == "" && s == sys:
			return true
		case hasSys && val != "" && s == sys && v == val:
			return true
		}
	}
	return false
}

// referencesPatient matches patient= / subject= against subject, patient,
// for and (Appointment) participant.actor references.
func referencesPatient(res map[string]any, param, want string) bool {
	want = lastTwo(want)
	if !strings.Contains(want, "/") {
		want = "Patient/" + want
	}
	var refs []any
	if param == "subject" {
		refs = []any{res["subject"]}
	} else {
		refs = []any{res["subject"], res["patient"], res["for"], res["beneficiary"]}
		if ps, ok := res["participant"].([]any); ok {
			for _, p := range ps {
				if pm, ok := p.(map[string]any); ok {
					refs = append(refs, pm["actor"])
				}
			}
		}
		if rt, _ := res["resourceType"].(string); rt == "Patient" {
			id, _ := res["id"].(string)
			if "Patient/"+id == want {
				return true
			}
		}
	}
	for _, r := range refs {
		m, _ := r.(map[string]any)
		s, _ := m["reference"].(string)
		if s != "" && lastTwo(s) == want && (param == "subject" || strings.HasPrefix(want, "Patient/")) {
			return true
		}
	}
	return false
}

func lastTwo(ref string) string {
	seg := strings.Split(strings.Trim(ref, "/"), "/")
	if n := len(seg); n >= 4 && seg[n-2] == "_history" {
		seg = seg[:n-2]
	}
	if n := len(seg); n >= 2 {
		return seg[n-2] + "/" + seg[n-1]
	}
	return ref
}

// dateFilter compiles a date search value with its prefix. The value's
// precision makes a range [lo, hi) (a second for a value with seconds, a
// millisecond with milliseconds, a day for a date), compared as the FHIR
// search specification says: gt means after the whole range.
func dateFilter(val string) (func(time.Time) bool, *Outcome) {
	prefix := "eq"
	if len(val) > 2 && val[0] >= 'a' && val[0] <= 'z' {
		prefix, val = val[:2], val[2:]
	}
	lo, hi, ok := dateRange(val)
	if !ok {
		return nil, outcome(http.StatusBadRequest, "invalid", fmt.Sprintf("Invalid date/time format: %q", val))
	}
	switch prefix {
	case "eq":
		return func(t time.Time) bool { return !t.Before(lo) && t.Before(hi) }, nil
	case "ne":
		return func(t time.Time) bool { return t.Before(lo) || !t.Before(hi) }, nil
	case "gt":
		return func(t time.Time) bool { return !t.Before(hi) }, nil
	case "ge":
		return func(t time.Time) bool { return !t.Before(lo) }, nil
	case "lt":
		return func(t time.Time) bool { return t.Before(lo) }, nil
	case "le":
		return func(t time.Time) bool { return t.Before(hi) }, nil
	default:
		return nil, outcome(http.StatusBadRequest, "not-supported", fmt.Sprintf("Unsupported date prefix %q", prefix))
	}
}

func dateRange(v string) (time.Time, time.Time, bool) {
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, t.AddDate(0, 0, 1), true
	}
	if t, err := time.Parse("2006-01", v); err == nil {
		return t, t.AddDate(0, 1, 0), true
	}
	if t, err := time.Parse("2006", v); err == nil {
		return t, t.AddDate(1, 0, 0), true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	prec := time.Second
	if i := strings.IndexByte(v, '.'); i >= 0 {
		digits := 0
		for _, c := range v[i+1:] {
			if c < '0' || c > '9' {
				break
			}
			digits++
		}
		prec = time.Second
		for range min(digits, 9) {
			prec /= 10
		}
	}
	return t, t.Add(prec), true
}

// match returns the live resources of typ that pass sp, sorted. Called
// with mu held.
func (s *Server) match(typ string, sp searchParams) []*record {
	var out []*record
	for _, rec := range s.data[typ] {
		if !rec.live() {
			continue
		}
		ok := true
		for _, f := range sp.filters {
			if !f(rec, rec.current()) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch sp.sort {
		case "_lastUpdated":
			if !a.current().lastUpdated.Equal(b.current().lastUpdated) {
				return a.current().lastUpdated.Before(b.current().lastUpdated)
			}
		case "-_lastUpdated":
			if !a.current().lastUpdated.Equal(b.current().lastUpdated) {
				return a.current().lastUpdated.After(b.current().lastUpdated)
			}
		}
		return a.seq < b.seq
	})
	return out
}

// snapshot is a search's result set, fixed when the search ran.
type snapshot struct {
	kind  string // searchset | history
	items []histRef
	count int
	self  string
}

// pageRef is what an opaque paging token stands for.
type pageRef struct {
	snap   *snapshot
	offset int
	page   int
}

func (s *Server) search(w http.ResponseWriter, r *http.Request, typ string, q url.Values, base string) {
	if f := s.failure(r, 1); f != nil {
		writeFailure(w, f)
		return
	}
	sp, oo := parseSearch(typ, q)
	if oo != nil {
		writeOutcome(w, oo)
		return
	}
	recs := s.match(typ, sp)
	snap := &snapshot{kind: "searchset", count: sp.count, self: base + r.URL.RequestURI()}
	for _, rec := range recs {
		snap.items = append(snap.items, histRef{rec, rec.current()})
	}
	s.writePage(w, pageRef{snap: snap, page: 1}, base)
}

// historySearch serves _history at system, type or instance level:
// versions newest first, _since (at or after) and _count.
func (s *Server) historySearch(w http.ResponseWriter, r *http.Request, typ, id, base string) {
	if f := s.failure(r, 1); f != nil {
		writeFailure(w, f)
		return
	}
	q := r.URL.Query()
	snap := &snapshot{kind: "history", count: defaultCount, self: base + r.URL.RequestURI()}
	var since time.Time
	for name, vals := range q {
		switch name {
		case "_since":
			t, err := time.Parse(time.RFC3339Nano, vals[0])
			if err != nil {
				writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Invalid _since"))
				return
			}
			since = t
		case "_count":
			n, err := strconv.Atoi(vals[0])
			if err != nil || n < 0 {
				writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Invalid _count"))
				return
			}
			snap.count = min(n, maxCount)
		default:
			if !ignored[name] {
				writeOutcome(w, outcome(http.StatusBadRequest, "not-supported", fmt.Sprintf("Unknown _history parameter %q", name)))
				return
			}
		}
	}
	if id != "" && s.data[typ][id] == nil {
		writeOutcome(w, outcome(http.StatusNotFound, "not-found", fmt.Sprintf("Resource %s/%s is not known", typ, id)))
		return
	}
	for i := len(s.history) - 1; i >= 0; i-- {
		h := s.history[i]
		if (typ != "" && h.rec.typ != typ) || (id != "" && h.rec.id != id) || h.v.lastUpdated.Before(since) {
			continue
		}
		snap.items = append(snap.items, h)
	}
	s.writePage(w, pageRef{snap: snap, page: 1}, base)
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, token, base string) {
	ref, ok := s.pages[token]
	if !ok {
		writeOutcome(w, outcome(http.StatusGone, "not-found", "Search results have expired or the paging link is not valid"))
		return
	}
	if f := s.failure(r, ref.page); f != nil {
		writeFailure(w, f)
		return
	}
	s.writePage(w, ref, base)
}

// writePage writes one page of a snapshot with an opaque `next` link.
func (s *Server) writePage(w http.ResponseWriter, ref pageRef, base string) {
	snap := ref.snap
	end := min(ref.offset+snap.count, len(snap.items))
	links := []any{map[string]any{"relation": "self", "url": snap.self}}
	if end < len(snap.items) && snap.count > 0 {
		tok := s.newPageToken(pageRef{snap: snap, offset: end, page: ref.page + 1})
		links = append(links, map[string]any{"relation": "next", "url": base + "?_getpages=" + tok})
	}
	entries := []any{}
	for _, h := range snap.items[ref.offset:end] {
		full := fmt.Sprintf("%s/%s/%s", base, h.rec.typ, h.rec.id)
		e := map[string]any{"fullUrl": full}
		if !h.v.deleted {
			e["resource"] = h.v.res
		}
		if snap.kind == "searchset" {
			e["search"] = map[string]any{"mode": "match"}
		} else {
			e["request"] = requestOf(h)
			e["response"] = responseOf(h)
		}
		entries = append(entries, e)
	}
	b := map[string]any{
		"resourceType": "Bundle",
		"id":           newID(),
		"meta":         map[string]any{"lastUpdated": s.now().UTC().Format(instantLayout)},
		"type":         snap.kind,
		"total":        len(snap.items),
		"link":         links,
		"entry":        entries,
	}
	writeJSON(w, http.StatusOK, b)
}

func requestOf(h histRef) map[string]any {
	switch h.v.method {
	case http.MethodPost:
		return map[string]any{"method": "POST", "url": h.rec.typ}
	default:
		return map[string]any{"method": h.v.method, "url": h.rec.typ + "/" + h.rec.id}
	}
}

func responseOf(h histRef) map[string]any {
	status := "200 OK"
	switch {
	case h.v.deleted:
		status = "204 No Content"
	case h.v.created:
		status = "201 Created"
	}
	return map[string]any{
		"status":       status,
		"etag":         fmt.Sprintf(`W/"%d"`, h.v.vid),
		"lastModified": h.v.lastUpdated.Format(instantLayout),
	}
}

// newPageToken stores ref under a random token; old tokens expire first.
func (s *Server) newPageToken(ref pageRef) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.pages[tok] = ref
	s.pageOrder = append(s.pageOrder, tok)
	if len(s.pageOrder) > maxPageRefs {
		delete(s.pages, s.pageOrder[0])
		s.pageOrder = s.pageOrder[1:]
	}
	return tok
}
