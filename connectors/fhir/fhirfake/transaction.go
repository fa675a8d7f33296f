package fhirfake

import (
	"fmt"
	"net/http"
	"strings"
)

type txEntry struct {
	index       int
	fullURL     string
	res         map[string]any
	method      string
	typ, id     string // from request.url (id empty for POST and conditional PUT)
	query       string // conditional PUT criteria
	ifNoneExist string
	ifMatch     string

	// resolved before execution
	existing *record // conditional create that matched
	assigned string  // id a POST will get
}

type txResult struct {
	status   int
	rec      *record
	v        *version
	outcome  *Outcome
	resource map[string]any // GET
}

// undo remembers how to roll back one write.
type undo struct {
	rec     *record
	prevLen int
	isNew   bool
}

// bundle serves POST [base] with a transaction or batch Bundle.
func (s *Server) bundle(w http.ResponseWriter, body []byte, base string) []job {
	res, oo := decodeResource(body)
	if oo == nil {
		if rt, _ := res["resourceType"].(string); rt != "Bundle" {
			oo = outcome(http.StatusBadRequest, "invalid", "POST to [base] needs a Bundle of type transaction or batch")
		}
	}
	if oo != nil {
		writeOutcome(w, oo)
		return nil
	}
	kind, _ := res["type"].(string)
	if kind != "transaction" && kind != "batch" {
		writeOutcome(w, outcome(http.StatusBadRequest, "invalid", "Bundle.type must be transaction or batch", "Bundle.type"))
		return nil
	}
	raw, _ := res["entry"].([]any)
	entries := make([]*txEntry, 0, len(raw))
	for i, x := range raw {
		e, oo := parseEntry(i, x)
		if oo != nil {
			writeOutcome(w, oo)
			return nil
		}
		entries = append(entries, e)
	}
	if kind == "batch" {
		return s.batch(w, entries, base)
	}
	return s.transaction(w, entries, base)
}

func parseEntry(i int, x any) (*txEntry, *Outcome) {
	m, _ := x.(map[string]any)
	req, _ := m["request"].(map[string]any)
	bad := func(msg string) (*txEntry, *Outcome) {
		return nil, outcome(http.StatusBadRequest, "invalid", fmt.Sprintf("Bundle.entry[%d]: %s", i, msg), fmt.Sprintf("Bundle.entry[%d].request", i))
	}
	if req == nil {
		return bad("request is required")
	}
	e := &txEntry{index: i}
	e.fullURL, _ = m["fullUrl"].(string)
	e.res, _ = m["resource"].(map[string]any)
	e.method, _ = req["method"].(string)
	u, _ := req["url"].(string)
	e.ifNoneExist, _ = req["ifNoneExist"].(string)
	e.ifMatch, _ = req["ifMatch"].(string)
	path, query, _ := strings.Cut(u, "?")
	seg := strings.Split(strings.Trim(path, "/"), "/")
	if len(seg) == 0 || !typeRE.MatchString(seg[0]) {
		return bad("request.url must start with a resource type")
	}
	e.typ, e.query = seg[0], query
	if len(seg) >= 2 {
		e.id = seg[1]
		if !idRE.MatchString(e.id) {
			return bad("request.url has an invalid id")
		}
	}
	switch e.method {
	case http.MethodPost:
		if e.res == nil || len(seg) != 1 {
			return bad("POST needs a resource and request.url [type]")
		}
	case http.MethodPut:
		if e.res == nil || (e.id == "" && query == "") {
			return bad("PUT needs a resource and request.url [type]/[id] or [type]?criteria")
		}
	case http.MethodDelete:
		if e.id == "" {
			return bad("DELETE needs request.url [type]/[id]")
		}
	case http.MethodGet:
		if e.id == "" {
			return bad("GET needs request.url [type]/[id]")
		}
	default:
		return bad("request.method must be GET, POST, PUT or DELETE")
	}
	if e.res != nil {
		if rt, _ := e.res["resourceType"].(string); rt != e.typ {
			return bad("the resource's type does not match request.url")
		}
	}
	return e, nil
}

// transaction runs entries atomically: DELETE, then POST, PUT and GET as
// the specification orders them, with urn:uuid references rewritten to the
// ids assigned. Any failure rolls everything back.
func (s *Server) transaction(w http.ResponseWriter, entries []*txEntry, base string) []job {
	fail := func(e *txEntry, oo *Outcome) []job {
		oo.Issue[0].Diagnostics = fmt.Sprintf("Bundle.entry[%d]: %s", e.index, oo.Issue[0].Diagnostics)
		writeOutcome(w, oo)
		return nil
	}
	// Resolve conditional creates and assign ids, then rewrite references.
	ids := map[string]string{}
	for _, e := range entries {
		switch {
		case e.method == http.MethodPost && e.ifNoneExist != "":
			matches, oo := s.conditional(e.typ, strings.TrimPrefix(e.ifNoneExist, "?"))
			if oo != nil {
				return fail(e, oo)
			}
			if len(matches) > 1 {
				return fail(e, outcome(http.StatusPreconditionFailed, "multiple-matches", fmt.Sprintf("ifNoneExist matched %d resources", len(matches))))
			}
			if len(matches) == 1 {
				e.existing = matches[0]
				ids[e.fullURL] = e.typ + "/" + matches[0].id
				continue
			}
			fallthrough
		case e.method == http.MethodPost:
			e.assigned = newID()
			ids[e.fullURL] = e.typ + "/" + e.assigned
		case e.method == http.MethodPut && e.id != "":
			ids[e.fullURL] = e.typ + "/" + e.id
		}
	}
	delete(ids, "")
	for _, e := range entries {
		if e.res != nil {
			e.res = rewriteRefs(e.res, ids).(map[string]any)
		}
	}

	// Remember enough to roll back.
	histLen, writes, seq := len(s.history), s.writes, s.seq
	counters := map[string][2]int{}
	for id, sub := range s.subs {
		counters[id] = [2]int{sub.events, sub.skip}
	}
	var undos []undo
	rollback := func() {
		for i := len(undos) - 1; i >= 0; i-- {
			u := undos[i]
			u.rec.versions = u.rec.versions[:u.prevLen]
			if u.isNew {
				delete(s.data[u.rec.typ], u.rec.id)
			}
		}
		s.history, s.writes, s.seq = s.history[:histLen], writes, seq
		for id, c := range counters {
			s.subs[id].events, s.subs[id].skip = c[0], c[1]
		}
	}

	results := make([]txResult, len(entries))
	var jobs []job
	for _, method := range []string{http.MethodDelete, http.MethodPost, http.MethodPut, http.MethodGet} {
		for _, e := range entries {
			if e.method != method {
				continue
			}
			res, js, u := s.execEntry(e, base)
			undos = append(undos, u...)
			if res.outcome != nil {
				rollback()
				return fail(e, res.outcome)
			}
			results[e.index] = res
			jobs = append(jobs, js...)
		}
	}
	writeJSON(w, http.StatusOK, responseBundle("transaction-response", results))
	return jobs
}

// batch runs each entry on its own; failures are reported per entry.
func (s *Server) batch(w http.ResponseWriter, entries []*txEntry, base string) []job {
	results := make([]txResult, len(entries))
	var jobs []job
	for _, e := range entries {
		if e.method == http.MethodPost {
			if e.ifNoneExist != "" {
				matches, oo := s.conditional(e.typ, strings.TrimPrefix(e.ifNoneExist, "?"))
				switch {
				case oo != nil:
					results[e.index] = txResult{outcome: oo}
					continue
				case len(matches) > 1:
					results[e.index] = txResult{outcome: outcome(http.StatusPreconditionFailed, "multiple-matches", "ifNoneExist matched more than one resource")}
					continue
				case len(matches) == 1:
					e.existing = matches[0]
				}
			}
			e.assigned = newID()
		}
		res, js, _ := s.execEntry(e, base)
		results[e.index] = res
		jobs = append(jobs, js...)
	}
	writeJSON(w, http.StatusOK, responseBundle("batch-response", results))
	return jobs
}

// execEntry performs one entry. Called with mu held.
func (s *Server) execEntry(e *txEntry, base string) (txResult, []job, []undo) {
	write := func(typ, id string, res map[string]any, method string) (txResult, []job, []undo) {
		if oo := validate(typ, res); oo != nil {
			return txResult{outcome: oo}, nil, nil
		}
		prev := s.data[typ][id]
		u := undo{isNew: prev == nil}
		if prev != nil {
			u.prevLen = len(prev.versions)
		}
		rec, v, wrote, jobs := s.put(typ, id, res, method)
		u.rec = rec
		status := http.StatusOK
		if wrote && v.created {
			status = http.StatusCreated
		}
		return txResult{status: status, rec: rec, v: v}, jobs, []undo{u}
	}
	switch e.method {
	case http.MethodPost:
		if e.existing != nil {
			return txResult{status: http.StatusOK, rec: e.existing, v: e.existing.current()}, nil, nil
		}
		return write(e.typ, e.assigned, e.res, http.MethodPost)
	case http.MethodPut:
		id := e.id
		if id == "" {
			matches, oo := s.conditional(e.typ, e.query)
			switch {
			case oo != nil:
				return txResult{outcome: oo}, nil, nil
			case len(matches) > 1:
				return txResult{outcome: outcome(http.StatusPreconditionFailed, "multiple-matches", "the conditional URL matched more than one resource")}, nil, nil
			case len(matches) == 1:
				id = matches[0].id
			default:
				id = newID()
			}
		}
		if bid, _ := e.res["id"].(string); e.id != "" && bid != "" && bid != id {
			return txResult{outcome: outcome(http.StatusBadRequest, "invalid", "resource id does not match request.url")}, nil, nil
		}
		if e.ifMatch != "" {
			rec := s.data[e.typ][id]
			if rec == nil || !rec.live() || fmt.Sprint(rec.current().vid) != etagVersion(e.ifMatch) {
				return txResult{outcome: outcome(http.StatusPreconditionFailed, "conflict", "Version mismatch: ifMatch does not name the current version")}, nil, nil
			}
		}
		return write(e.typ, id, e.res, http.MethodPut)
	case http.MethodDelete:
		rec := s.data[e.typ][e.id]
		if rec == nil || !rec.live() {
			return txResult{status: http.StatusNoContent}, nil, nil
		}
		u := undo{rec: rec, prevLen: len(rec.versions)}
		v := s.remove(rec)
		return txResult{status: http.StatusNoContent, rec: rec, v: v}, nil, []undo{u}
	default: // GET
		rec := s.data[e.typ][e.id]
		if rec == nil || !rec.live() {
			return txResult{outcome: outcome(http.StatusNotFound, "not-found", "Resource is not known")}, nil, nil
		}
		return txResult{status: http.StatusOK, rec: rec, v: rec.current(), resource: rec.current().res}, nil, nil
	}
}

func responseBundle(kind string, results []txResult) map[string]any {
	entries := make([]any, 0, len(results))
	for _, r := range results {
		e := map[string]any{}
		if r.outcome != nil {
			e["response"] = map[string]any{"status": fmt.Sprintf("%d %s", r.outcome.Status, http.StatusText(r.outcome.Status)), "outcome": r.outcome}
			entries = append(entries, e)
			continue
		}
		resp := map[string]any{"status": fmt.Sprintf("%d %s", r.status, http.StatusText(r.status))}
		if r.rec != nil && r.v != nil {
			resp["location"] = fmt.Sprintf("%s/%s/_history/%d", r.rec.typ, r.rec.id, r.v.vid)
			resp["etag"] = fmt.Sprintf(`W/"%d"`, r.v.vid)
			resp["lastModified"] = r.v.lastUpdated.Format(instantLayout)
			e["fullUrl"] = r.rec.typ + "/" + r.rec.id
		}
		if r.resource != nil {
			e["resource"] = r.resource
		}
		e["response"] = resp
		entries = append(entries, e)
	}
	return map[string]any{"resourceType": "Bundle", "id": newID(), "type": kind, "entry": entries}
}

// rewriteRefs replaces references to urn:uuid fullUrls with Type/id.
func rewriteRefs(v any, ids map[string]string) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if s, ok := x.(string); ok && k == "reference" {
				if to, ok := ids[s]; ok {
					out[k] = to
					continue
				}
			}
			out[k] = rewriteRefs(x, ids)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = rewriteRefs(x, ids)
		}
		return out
	default:
		return v
	}
}
