package xerofake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const maxBody = 10 << 20

// api serves /api.xro/2.0/...: authentication, tenant, limits,
// idempotency, then the resource.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, problem(http.StatusRequestEntityTooLarge, "Request Entity Too Large", "The request body is too large"))
		return
	}
	tenant := r.Header.Get("Xero-Tenant-Id")
	key := r.Header.Get("Idempotency-Key")
	rec := Recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}

	s.mu.Lock()
	rec.At = s.now()
	finish := func(status int, header http.Header, resp []byte) {
		rec.Status = status
		s.requests = append(s.requests, rec)
		s.mu.Unlock()
		replay := ""
		if rec.Replay {
			replay = " (replay)"
		}
		s.logf("%s %s tenant=%s key=%q -> %d%s", r.Method, r.URL.Path, short(tenant), key, status, replay)
		for k, vs := range header {
			w.Header()[k] = vs
		}
		if w.Header().Get("Content-Type") == "" && len(resp) > 0 {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
		w.WriteHeader(status)
		_, _ = w.Write(resp)
	}
	fail := func(status int, header http.Header, v any) {
		b, _ := json.Marshal(v)
		finish(status, header, b)
	}

	g := s.bearerCheck(r)
	if g.status != 0 {
		fail(g.status, nil, g.body)
		return
	}
	o := s.orgs[tenant]
	if o == nil && tenant != "" && s.openTenants && g.grant.all {
		o = s.addOrg(tenant, "Organisation "+short(tenant))
	}
	if o == nil || !(g.grant.all || g.grant.tenants[tenant]) {
		fail(http.StatusForbidden, nil, problem(http.StatusForbidden, "Forbidden", "AuthorizationUnsuccessful"))
		return
	}

	// Limits, counted per tenant on calls that got this far.
	now := s.now()
	cut := 0
	for cut < len(o.calls) && !o.calls[cut].After(now.Add(-24*time.Hour)) {
		cut++
	}
	o.calls = o.calls[cut:]
	inWindow, oldest := 0, now
	for i := len(o.calls) - 1; i >= 0 && o.calls[i].After(now.Add(-s.window)); i-- {
		inWindow++
		oldest = o.calls[i]
	}
	limited := func(problemName string, retry time.Duration) {
		o.limited++
		h := http.Header{}
		h.Set("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(retry.Seconds())))))
		h.Set("X-Rate-Limit-Problem", problemName)
		finish(http.StatusTooManyRequests, h, nil)
	}
	switch {
	case o.inflight >= s.concurrent:
		limited("concurrent", time.Second)
		return
	case inWindow >= s.perWindow:
		limited("minute", oldest.Add(s.window).Sub(now))
		return
	case len(o.calls) >= s.perDay:
		limited("day", o.calls[0].Add(24*time.Hour).Sub(now))
		return
	}
	o.calls = append(o.calls, now)
	o.maxInWindow = max(o.maxInWindow, inWindow+1)
	limitHeaders := http.Header{}
	limitHeaders.Set("X-MinLimit-Remaining", strconv.Itoa(s.perWindow-inWindow-1))
	limitHeaders.Set("X-DayLimit-Remaining", strconv.Itoa(s.perDay-len(o.calls)))
	limitHeaders.Set("X-AppMinLimit-Remaining", "9999")

	if len(s.script) > 0 {
		sr := s.script[0]
		s.script = s.script[1:]
		for k, vs := range sr.Header {
			limitHeaders[k] = vs
		}
		finish(sr.Status, limitHeaders, sr.Body)
		return
	}

	write := r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch
	var entry *idemEntry
	if write && key != "" {
		if e := o.idem[key]; e != nil {
			switch {
			case e.inflight:
				fail(http.StatusConflict, limitHeaders, problem(http.StatusConflict, "Conflict", "A request with this Idempotency-Key is already being processed."))
			case e.method == r.Method && e.path == r.URL.Path && bytes.Equal(e.body, body):
				rec.Replay = true
				finish(e.status, limitHeaders, e.resp)
			default:
				fail(http.StatusBadRequest, limitHeaders, problem(http.StatusBadRequest, "Bad Request", "The Idempotency-Key has already been used with a different request."))
			}
			return
		}
		entry = &idemEntry{method: r.Method, path: r.URL.Path, body: body, inflight: true}
		o.idem[key] = entry
	}
	o.inflight++
	s.mu.Unlock()

	// Other calls may run here: this is the call's time "in flight".

	s.mu.Lock()
	o.inflight--
	status, resp := s.route(o, r, body)
	if entry != nil {
		if status >= 200 && status < 300 {
			entry.inflight, entry.status, entry.resp = false, status, resp
		} else {
			delete(o.idem, key)
		}
	}
	finish(status, limitHeaders, resp)
}

type authResult struct {
	grant  *grant
	status int
	body   any
}

// bearerCheck checks the access token: its grant, or the 401 to answer.
// The caller holds s.mu.
func (s *Server) bearerCheck(r *http.Request) *authResult {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a := s.access[tok]
	switch {
	case !ok || a == nil || a.stale || a.g.revoked:
		return &authResult{status: http.StatusUnauthorized, body: problem(http.StatusUnauthorized, "Unauthorized", "AuthenticationUnsuccessful")}
	case !s.now().Before(a.expires):
		return &authResult{status: http.StatusUnauthorized, body: problem(http.StatusUnauthorized, "Unauthorized",
			"TokenExpired: token expired at "+a.expires.UTC().Format("01/02/2006 15:04:05"))}
	}
	return &authResult{grant: a.g}
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// resource describes one writable collection.
type resource struct {
	wrapper, idField string
	list             func(*org) *[]map[string]any
	validate         func(s *Server, o *org, el map[string]any, method string) ([]string, func() map[string]any)
}

var resources = map[string]resource{
	"Contacts": {"Contacts", "ContactID", func(o *org) *[]map[string]any { return &o.contacts },
		func(s *Server, o *org, el map[string]any, _ string) ([]string, func() map[string]any) {
			return s.contact(o, el)
		}},
	"Invoices": {"Invoices", "InvoiceID", func(o *org) *[]map[string]any { return &o.invoices },
		func(s *Server, o *org, el map[string]any, _ string) ([]string, func() map[string]any) {
			return s.invoice(o, el, "")
		}},
	"Payments": {"Payments", "PaymentID", func(o *org) *[]map[string]any { return &o.payments },
		func(s *Server, o *org, el map[string]any, _ string) ([]string, func() map[string]any) {
			return s.payment(o, el)
		}},
	"CreditNotes": {"CreditNotes", "CreditNoteID", func(o *org) *[]map[string]any { return &o.creditNotes },
		func(s *Server, o *org, el map[string]any, _ string) ([]string, func() map[string]any) {
			return s.creditNote(o, el)
		}},
}

// route serves one resource call. The caller holds s.mu.
func (s *Server) route(o *org, r *http.Request, body []byte) (int, []byte) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, APIPrefix), "/"), "/")
	name := parts[0]
	switch {
	case name == "Accounts" && len(parts) == 1 && r.Method == http.MethodGet:
		return s.ok(map[string]any{"Accounts": o.accounts})
	case name == "Organisation" && len(parts) == 1 && r.Method == http.MethodGet:
		return s.ok(map[string]any{"Organisations": []any{map[string]any{"OrganisationID": o.id, "Name": o.name, "BaseCurrency": "GBP", "CountryCode": "GB"}}})
	}
	res, ok := resources[name]
	if !ok || len(parts) > 2 {
		return notFound()
	}
	list := res.list(o)
	switch {
	case r.Method == http.MethodGet && len(parts) == 1:
		out := *list
		if ids := r.URL.Query().Get("IDs"); ids != "" {
			want := map[string]bool{}
			for _, id := range strings.Split(ids, ",") {
				want[strings.ToLower(strings.TrimSpace(id))] = true
			}
			out = nil
			for _, m := range *list {
				if want[strings.ToLower(fmt.Sprint(m[res.idField]))] {
					out = append(out, m)
				}
			}
		}
		return s.ok(map[string]any{res.wrapper: nonNil(out)})
	case r.Method == http.MethodGet:
		if m := find(*list, res.idField, parts[1]); m != nil {
			return s.ok(map[string]any{res.wrapper: []any{m}})
		}
		return notFound()
	case name == "Payments" && len(parts) == 2 && r.Method == http.MethodPost:
		return s.deletePayment(o, parts[1], body)
	case len(parts) == 2 && (r.Method == http.MethodPost) && name == "Contacts":
		if find(o.contacts, "ContactID", parts[1]) == nil {
			return notFound()
		}
	case len(parts) == 2:
		return notFound()
	case r.Method != http.MethodPut && r.Method != http.MethodPost:
		return http.StatusMethodNotAllowed, mustJSON(problem(http.StatusMethodNotAllowed, "Method Not Allowed", "The requested resource does not support http method '"+r.Method+"'."))
	}

	elements, perr := elementsOf(body, res.wrapper)
	if perr != "" {
		return http.StatusBadRequest, mustJSON(map[string]any{"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": perr})
	}
	if len(parts) == 2 && len(elements) > 0 {
		elements[0]["ContactID"] = parts[1]
	}
	summarize := r.URL.Query().Get("summarizeErrors") != "false"
	type checked struct {
		el    map[string]any
		errs  []string
		apply func() map[string]any
	}
	var all []checked
	failed := false
	for _, el := range elements {
		errs, apply := res.validate(s, o, el, r.Method)
		all = append(all, checked{el, errs, apply})
		failed = failed || len(errs) > 0
	}
	if failed && summarize {
		var els []any
		for _, c := range all {
			if len(c.errs) > 0 {
				els = append(els, withErrors(c.el, c.errs))
			}
		}
		return http.StatusBadRequest, mustJSON(map[string]any{
			"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred", "Elements": els,
		})
	}
	var out []any
	for _, c := range all {
		if len(c.errs) > 0 {
			e := withErrors(c.el, c.errs)
			e["StatusAttributeString"] = "ERROR"
			e["HasValidationErrors"] = true
			out = append(out, e)
			continue
		}
		m := c.apply()
		o.effects++
		m = clone(m)
		m["StatusAttributeString"] = "OK"
		out = append(out, m)
	}
	return s.ok(map[string]any{res.wrapper: out})
}

func withErrors(el map[string]any, errs []string) map[string]any {
	e := clone(el)
	var ve []any
	for _, m := range errs {
		ve = append(ve, map[string]any{"Message": m})
	}
	e["ValidationErrors"] = ve
	return e
}

func (s *Server) ok(v map[string]any) (int, []byte) {
	v["Id"] = newID()
	v["Status"] = "OK"
	v["ProviderName"] = "clinicbridge xerofake"
	v["DateTimeUTC"] = fmt.Sprintf("/Date(%d)/", s.now().UnixMilli())
	return http.StatusOK, mustJSON(v)
}

func notFound() (int, []byte) {
	return http.StatusNotFound, mustJSON(problem(http.StatusNotFound, "Not Found", "The resource you're looking for cannot be found"))
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func nonNil(l []map[string]any) []map[string]any {
	if l == nil {
		return []map[string]any{}
	}
	return l
}

// elementsOf reads {"Wrapper":[...]} or a single object.
func elementsOf(body []byte, wrapper string) ([]map[string]any, string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, "JSON for post data was invalid, Error converting value to the expected type."
	}
	if raw, ok := top[wrapper]; ok {
		var els []map[string]any
		if err := json.Unmarshal(raw, &els); err != nil {
			return nil, "JSON for post data was invalid, " + wrapper + " must be a list of objects."
		}
		if len(els) == 0 {
			return nil, "No " + wrapper + " were provided."
		}
		return els, ""
	}
	var el map[string]any
	_ = json.Unmarshal(body, &el)
	return []map[string]any{el}, ""
}

func find(list []map[string]any, field, id string) map[string]any {
	for _, m := range list {
		if v, _ := m[field].(string); strings.EqualFold(v, id) {
			return m
		}
	}
	return nil
}

func str(m map[string]any, k string) string {
	v, _ := m[k].(string)
	return strings.TrimSpace(v)
}

func num(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n) && !math.IsInf(n, 0)
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		return f, err == nil
	}
	return 0, false
}

// date reads Xero's accepted date forms; missing means today.
func (s *Server) date(m map[string]any, k string) (time.Time, bool) {
	v, ok := m[k]
	if !ok || v == nil || v == "" {
		y, mo, d := s.now().UTC().Date()
		return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC), true
	}
	sv, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	if rest, ok := strings.CutPrefix(sv, "/Date("); ok {
		digits := strings.TrimRight(strings.SplitN(strings.SplitN(rest, ")", 2)[0], "+", 2)[0], " ")
		ms, err := strconv.ParseInt(digits, 10, 64)
		return time.UnixMilli(ms).UTC(), err == nil
	}
	for _, layout := range []string{"2006-01-02", "2006-01-02T15:04:05", time.RFC3339} {
		if t, err := time.Parse(layout, sv); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

func validEmail(e string) bool {
	at := strings.LastIndex(e, "@")
	return at > 0 && strings.Contains(e[at+1:], ".") && !strings.ContainsAny(e, " ,;")
}

// contact validates a Contacts element: update by ContactID or
// ContactNumber, else create; names are unique.
func (s *Server) contact(o *org, el map[string]any) ([]string, func() map[string]any) {
	var errs []string
	var target map[string]any
	if id := str(el, "ContactID"); id != "" {
		if target = find(o.contacts, "ContactID", id); target == nil {
			errs = append(errs, "Contact could not be found")
		}
	} else if n := str(el, "ContactNumber"); n != "" {
		target = find(o.contacts, "ContactNumber", n)
	}
	name := str(el, "Name")
	if target == nil && name == "" && len(errs) == 0 {
		errs = append(errs, "The contact name must be specified.")
	}
	if name != "" {
		for _, c := range o.contacts {
			if strings.EqualFold(str(c, "Name"), name) && (target == nil || c["ContactID"] != target["ContactID"]) {
				errs = append(errs, "The contact name "+name+" is already assigned to another contact. The contact name must be unique across all active contacts.")
				break
			}
		}
	}
	if e := str(el, "EmailAddress"); e != "" && !validEmail(e) {
		errs = append(errs, "Email address must be valid.")
	}
	return errs, func() map[string]any {
		if target == nil {
			target = map[string]any{"ContactID": newID(), "ContactStatus": "ACTIVE"}
			o.contacts = append(o.contacts, target)
		}
		for k, v := range el {
			if k != "ContactID" {
				target[k] = v
			}
		}
		target["UpdatedDateUTC"] = netDate(s.now())
		return target
	}
}

// contactRef resolves a transaction's Contact: by ContactID, else by Name
// (a new name creates the contact, as Xero does).
func (s *Server) contactRef(o *org, el map[string]any) (map[string]any, func() map[string]any, string) {
	ref, _ := el["Contact"].(map[string]any)
	if ref == nil {
		return nil, nil, "A Contact must be specified for this type of transaction"
	}
	if id := str(ref, "ContactID"); id != "" {
		c := find(o.contacts, "ContactID", id)
		if c == nil {
			return nil, nil, "Contact could not be found"
		}
		return c, nil, ""
	}
	name := str(ref, "Name")
	if name == "" {
		return nil, nil, "A Contact must be specified for this type of transaction"
	}
	for _, c := range o.contacts {
		if strings.EqualFold(str(c, "Name"), name) {
			return c, nil, ""
		}
	}
	return nil, func() map[string]any {
		c := map[string]any{"ContactID": newID(), "ContactStatus": "ACTIVE", "Name": name, "UpdatedDateUTC": netDate(s.now())}
		o.contacts = append(o.contacts, c)
		return c
	}, ""
}

func (o *org) account(code string) map[string]any {
	return find(o.accounts, "Code", code)
}

// lines checks and totals LineItems.
func (s *Server) lines(o *org, el map[string]any, approved bool) ([]any, float64, []string) {
	var errs []string
	raw, _ := el["LineItems"].([]any)
	if _, present := el["LineItems"]; present && raw == nil && el["LineItems"] != nil {
		return nil, 0, []string{"LineItems must be a list"}
	}
	var out []any
	total := 0.0
	for _, l := range raw {
		li, ok := l.(map[string]any)
		if !ok {
			errs = append(errs, "Line items must be objects")
			continue
		}
		qty, unit := 1.0, 0.0
		if v, ok := li["Quantity"]; ok {
			if qty, ok = num(v); !ok {
				errs = append(errs, "Quantity must be a number")
			}
		}
		if v, ok := li["UnitAmount"]; ok {
			if unit, ok = num(v); !ok {
				errs = append(errs, "UnitAmount must be a number")
			}
		}
		amount := round2(qty * unit)
		if v, ok := li["LineAmount"]; ok {
			if la, ok := num(v); ok {
				amount = round2(la)
			}
		}
		code := str(li, "AccountCode")
		switch {
		case code != "" && o.account(code) == nil:
			errs = append(errs, "Account code '"+code+"' is not a valid code for this document.")
		case code == "" && approved:
			errs = append(errs, "Account code must be specified for each line item on an approved document")
		}
		if str(li, "Description") == "" && str(li, "ItemCode") == "" {
			errs = append(errs, "Description needs to be specified for each line item")
		}
		c := clone(li)
		c["LineItemID"] = newID()
		c["Quantity"], c["UnitAmount"], c["LineAmount"], c["TaxAmount"] = qty, unit, amount, 0.0
		out = append(out, c)
		total += amount
	}
	if approved && len(raw) == 0 {
		errs = append(errs, "An approved document must have at least one line item")
	}
	return out, round2(total), errs
}

func status(el map[string]any, allowed ...string) (string, string) {
	st := str(el, "Status")
	if st == "" {
		return "DRAFT", ""
	}
	for _, a := range allowed {
		if st == a {
			return st, ""
		}
	}
	return "", "Status must be one of " + strings.Join(allowed, ", ")
}

// invoice validates an Invoices element (create only).
func (s *Server) invoice(o *org, el map[string]any, _ string) ([]string, func() map[string]any) {
	var errs []string
	if str(el, "InvoiceID") != "" {
		return []string{"xerofake: updating invoices is not modelled; create a new one"}, nil
	}
	typ := str(el, "Type")
	switch typ {
	case "ACCREC", "ACCPAY":
	case "":
		errs = append(errs, "Invoice Type must be specified")
	default:
		errs = append(errs, "Invoice Type must be ACCREC or ACCPAY")
	}
	st, serr := status(el, "DRAFT", "SUBMITTED", "AUTHORISED")
	if serr != "" {
		errs = append(errs, serr)
	}
	contact, newContact, cerr := s.contactRef(o, el)
	if cerr != "" {
		errs = append(errs, cerr)
	}
	lines, total, lerrs := s.lines(o, el, st == "AUTHORISED")
	errs = append(errs, lerrs...)
	date, ok := s.date(el, "Date")
	if !ok {
		errs = append(errs, "Date must be a valid date (YYYY-MM-DD)")
	}
	due, ok := s.date(el, "DueDate")
	if !ok {
		errs = append(errs, "DueDate must be a valid date (YYYY-MM-DD)")
	}
	number := str(el, "InvoiceNumber")
	if number != "" && typ == "ACCREC" {
		for _, inv := range o.invoices {
			if str(inv, "InvoiceNumber") == number && inv["Type"] == "ACCREC" {
				errs = append(errs, "Invoice # must be unique.")
				break
			}
		}
	}
	if len(errs) > 0 {
		return errs, nil
	}
	return nil, func() map[string]any {
		if newContact != nil {
			contact = newContact()
		}
		if number == "" && typ == "ACCREC" {
			o.invoiceSeq++
			number = fmt.Sprintf("INV-%04d", o.invoiceSeq)
		}
		inv := clone(el)
		for k, v := range map[string]any{
			"InvoiceID": newID(), "InvoiceNumber": number, "Type": typ, "Status": st,
			"Contact":   map[string]any{"ContactID": contact["ContactID"], "Name": contact["Name"]},
			"LineItems": lines, "Date": netDate(date), "DateString": date.Format("2006-01-02T15:04:05"),
			"DueDate": netDate(due), "DueDateString": due.Format("2006-01-02T15:04:05"),
			"SubTotal": total, "TotalTax": 0.0, "Total": total, "AmountDue": total, "AmountPaid": 0.0, "AmountCredited": 0.0,
			"CurrencyCode": orDefault(str(el, "CurrencyCode"), "GBP"), "LineAmountTypes": orDefault(str(el, "LineAmountTypes"), "Exclusive"),
			"Payments": []any{}, "UpdatedDateUTC": netDate(s.now()), "HasErrors": false,
		} {
			inv[k] = v
		}
		o.invoices = append(o.invoices, inv)
		return inv
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// payment validates a Payments element: an existing AUTHORISED invoice, a
// bank account (or one that accepts payments), 0 < Amount <= AmountDue.
func (s *Server) payment(o *org, el map[string]any) ([]string, func() map[string]any) {
	var errs []string
	var inv map[string]any
	ref, _ := el["Invoice"].(map[string]any)
	switch {
	case ref == nil || (str(ref, "InvoiceID") == "" && str(ref, "InvoiceNumber") == ""):
		errs = append(errs, "You must specify an Invoice, CreditNote, Prepayment or Overpayment to apply this payment to")
	case str(ref, "InvoiceID") != "":
		inv = find(o.invoices, "InvoiceID", str(ref, "InvoiceID"))
	default:
		inv = find(o.invoices, "InvoiceNumber", str(ref, "InvoiceNumber"))
	}
	if ref != nil && inv == nil && len(errs) == 0 {
		errs = append(errs, "Invoice could not be found")
	}
	var acct map[string]any
	aref, _ := el["Account"].(map[string]any)
	switch {
	case aref == nil || (str(aref, "Code") == "" && str(aref, "AccountID") == ""):
		errs = append(errs, "Account Code or AccountID must be specified")
	case str(aref, "AccountID") != "":
		acct = find(o.accounts, "AccountID", str(aref, "AccountID"))
	default:
		acct = o.account(str(aref, "Code"))
	}
	if acct == nil && aref != nil && (str(aref, "Code") != "" || str(aref, "AccountID") != "") {
		errs = append(errs, "Account could not be found")
	} else if acct != nil && acct["Type"] != "BANK" && acct["EnablePaymentsToAccount"] != true {
		errs = append(errs, "Payments cannot be made to this account. The account must be a bank account or have payments enabled.")
	}
	amount, ok := num(el["Amount"])
	switch {
	case !ok:
		errs = append(errs, "Amount must be specified as a number")
	case round2(amount) <= 0:
		errs = append(errs, "Payment amount must be greater than zero")
	}
	if inv != nil {
		if inv["Status"] != "AUTHORISED" {
			errs = append(errs, "Payment can only be made against an invoice with a status of AUTHORISED")
		} else if due, _ := num(inv["AmountDue"]); ok && round2(amount) > round2(due) {
			errs = append(errs, "Payment amount exceeds the amount outstanding on this document")
		}
	}
	date, dok := s.date(el, "Date")
	if !dok {
		errs = append(errs, "Date must be a valid date (YYYY-MM-DD)")
	}
	if len(errs) > 0 {
		return errs, nil
	}
	return nil, func() map[string]any {
		amount = round2(amount)
		paid, _ := num(inv["AmountPaid"])
		due, _ := num(inv["AmountDue"])
		inv["AmountPaid"], inv["AmountDue"] = round2(paid+amount), round2(due-amount)
		if round2(due-amount) == 0 {
			inv["Status"] = "PAID"
			inv["FullyPaidOnDate"] = netDate(date)
		}
		inv["UpdatedDateUTC"] = netDate(s.now())
		ptype := "ACCRECPAYMENT"
		if inv["Type"] == "ACCPAY" {
			ptype = "ACCPAYPAYMENT"
		}
		p := map[string]any{
			"PaymentID": newID(), "Date": netDate(date), "Amount": amount, "Reference": str(el, "Reference"),
			"CurrencyRate": 1.0, "PaymentType": ptype, "Status": "AUTHORISED", "IsReconciled": el["IsReconciled"] == true,
			"Account":        map[string]any{"AccountID": acct["AccountID"], "Code": acct["Code"]},
			"Invoice":        map[string]any{"InvoiceID": inv["InvoiceID"], "InvoiceNumber": inv["InvoiceNumber"], "Type": inv["Type"], "Contact": inv["Contact"]},
			"UpdatedDateUTC": netDate(s.now()), "HasAccount": true, "HasValidationErrors": false,
		}
		pays, _ := inv["Payments"].([]any)
		inv["Payments"] = append(pays, map[string]any{"PaymentID": p["PaymentID"], "Date": p["Date"], "Amount": amount})
		o.payments = append(o.payments, p)
		return p
	}
}

// deletePayment is POST /Payments/{id} {"Status":"DELETED"}.
func (s *Server) deletePayment(o *org, id string, body []byte) (int, []byte) {
	p := find(o.payments, "PaymentID", id)
	if p == nil {
		return notFound()
	}
	els, perr := elementsOf(body, "Payments")
	if perr != "" || len(els) != 1 || str(els[0], "Status") != "DELETED" {
		return http.StatusBadRequest, mustJSON(map[string]any{"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred",
			"Elements": []any{withErrors(map[string]any{"PaymentID": id}, []string{"Only Status DELETED can be set on a payment"})}})
	}
	if p["Status"] != "DELETED" {
		p["Status"] = "DELETED"
		ref, _ := p["Invoice"].(map[string]any)
		if inv := find(o.invoices, "InvoiceID", str(ref, "InvoiceID")); inv != nil {
			amount, _ := num(p["Amount"])
			paid, _ := num(inv["AmountPaid"])
			due, _ := num(inv["AmountDue"])
			inv["AmountPaid"], inv["AmountDue"], inv["Status"] = round2(paid-amount), round2(due+amount), "AUTHORISED"
		}
		o.effects++
	}
	return s.ok(map[string]any{"Payments": []any{p}})
}

// creditNote validates a CreditNotes element (create only).
func (s *Server) creditNote(o *org, el map[string]any) ([]string, func() map[string]any) {
	var errs []string
	typ := str(el, "Type")
	switch typ {
	case "ACCRECCREDIT", "ACCPAYCREDIT":
	case "":
		errs = append(errs, "CreditNote Type must be specified")
	default:
		errs = append(errs, "CreditNote Type must be ACCRECCREDIT or ACCPAYCREDIT")
	}
	st, serr := status(el, "DRAFT", "SUBMITTED", "AUTHORISED")
	if serr != "" {
		errs = append(errs, serr)
	}
	contact, newContact, cerr := s.contactRef(o, el)
	if cerr != "" {
		errs = append(errs, cerr)
	}
	lines, total, lerrs := s.lines(o, el, st == "AUTHORISED")
	errs = append(errs, lerrs...)
	date, ok := s.date(el, "Date")
	if !ok {
		errs = append(errs, "Date must be a valid date (YYYY-MM-DD)")
	}
	if len(errs) > 0 {
		return errs, nil
	}
	return nil, func() map[string]any {
		if newContact != nil {
			contact = newContact()
		}
		number := str(el, "CreditNoteNumber")
		if number == "" && typ == "ACCRECCREDIT" {
			o.creditSeq++
			number = fmt.Sprintf("CN-%04d", o.creditSeq)
		}
		cn := clone(el)
		for k, v := range map[string]any{
			"CreditNoteID": newID(), "CreditNoteNumber": number, "Type": typ, "Status": st,
			"Contact":   map[string]any{"ContactID": contact["ContactID"], "Name": contact["Name"]},
			"LineItems": lines, "Date": netDate(date), "DateString": date.Format("2006-01-02T15:04:05"),
			"SubTotal": total, "TotalTax": 0.0, "Total": total, "RemainingCredit": total,
			"CurrencyCode": orDefault(str(el, "CurrencyCode"), "GBP"), "UpdatedDateUTC": netDate(s.now()),
		} {
			cn[k] = v
		}
		o.creditNotes = append(o.creditNotes, cn)
		return cn
	}
}
