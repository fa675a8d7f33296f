package fhirfake

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcome is an OperationOutcome with the HTTP status it is sent with. It
// is also the error the Go API (Create, Update) returns.
type Outcome struct {
	Status       int     `json:"-"`
	ResourceType string  `json:"resourceType"`
	Issue        []Issue `json:"issue"`
}

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

func (o *Outcome) Error() string {
	if len(o.Issue) == 0 {
		return fmt.Sprintf("fhirfake: %d", o.Status)
	}
	return fmt.Sprintf("fhirfake: %d %s: %s", o.Status, o.Issue[0].Code, o.Issue[0].Diagnostics)
}

func outcome(status int, code, diagnostics string, expression ...string) *Outcome {
	return &Outcome{Status: status, ResourceType: "OperationOutcome", Issue: []Issue{{
		Severity: "error", Code: code, Diagnostics: diagnostics, Expression: expression,
	}}}
}

func writeOutcome(w http.ResponseWriter, o *Outcome) { writeJSON(w, o.Status, o) }

// Failure is an injected failure: the fake answers matching requests with
// Status and an OperationOutcome carrying IssueCode, instead of serving them.
type Failure struct {
	// Status is the HTTP status (default 500).
	Status int
	// IssueCode is the OperationOutcome issue code (default: the usual one
	// for Status, e.g. throttled for 429, transient for 503). "-" sends no
	// OperationOutcome body.
	IssueCode string
	// Severity defaults to error.
	Severity string
	// Diagnostics is the issue's text.
	Diagnostics string
	// RetryAfter is sent as the Retry-After header when set ("2", or an HTTP date).
	RetryAfter string
	// Method and Path restrict the failure to requests with that method and
	// a path starting with Path ("/Patient", "/auth/token"); empty matches any.
	Method string
	Path   string
	// Page restricts the failure to a search's nth page (1 is the first
	// search request, 2 the first `next` link, ...); 0 matches any request.
	Page int
	// Times is how many requests it answers (0 means 1; negative, forever).
	Times int
}

// Fail queues an injected failure. Failures are matched in the order they
// were queued; each answers up to Times requests.
func (s *Server) Fail(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	if f.Times == 0 {
		f.Times = 1
	}
	s.failures = append(s.failures, &f)
}

// Script makes the next request fail with status and, when retryAfter > 0,
// a Retry-After header in whole seconds (connectortest.SinkHarness.Script).
func (s *Server) Script(status int, retryAfter time.Duration) {
	f := Failure{Status: status}
	if retryAfter > 0 {
		f.RetryAfter = strconv.Itoa(int(retryAfter / time.Second))
	}
	s.Fail(f)
}

// failure takes the first queued failure matching r (and page, for search
// pages). Called with mu held.
func (s *Server) failure(r *http.Request, page int) *Failure {
	for i, f := range s.failures {
		if f.Method != "" && f.Method != r.Method {
			continue
		}
		if f.Path != "" && !strings.HasPrefix(r.URL.Path, f.Path) {
			continue
		}
		if f.Page != page {
			continue
		}
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.failures = append(s.failures[:i:i], s.failures[i+1:]...)
			}
		}
		return f
	}
	return nil
}

func defaultIssueCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "login"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not-found"
	case http.StatusMethodNotAllowed:
		return "not-supported"
	case http.StatusRequestTimeout:
		return "timeout"
	case http.StatusConflict, http.StatusPreconditionFailed:
		return "conflict"
	case http.StatusGone:
		return "deleted"
	case http.StatusUnprocessableEntity:
		return "processing"
	case http.StatusTooManyRequests:
		return "throttled"
	case http.StatusInternalServerError:
		return "exception"
	default:
		if status >= 500 {
			return "transient"
		}
		return "processing"
	}
}

func writeFailure(w http.ResponseWriter, f *Failure) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.IssueCode == "-" {
		w.WriteHeader(f.Status)
		return
	}
	code := f.IssueCode
	if code == "" {
		code = defaultIssueCode(f.Status)
	}
	diag := f.Diagnostics
	if diag == "" {
		diag = "Injected failure"
	}
	o := outcome(f.Status, code, diag)
	if f.Severity != "" {
		o.Issue[0].Severity = f.Severity
	}
	writeOutcome(w, o)
}

// Required elements and status codes of the clinic resources (R4), checked
// on every write like a server's basic validation. The diagnostics echo the
// rejected value, as real servers do.
var (
	required = map[string][]string{
		"Appointment":       {"status", "participant"},
		"Observation":       {"status", "code"},
		"DiagnosticReport":  {"status", "code"},
		"MedicationRequest": {"status", "intent", "subject"},
		"Task":              {"status", "intent"},
		"Bundle":            {"type"},
		"Subscription":      {"status", "criteria", "channel"},
	}
	statuses = map[string][]string{
		"Appointment":       {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error", "checked-in", "waitlist"},
		"Observation":       {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"},
		"DiagnosticReport":  {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled", "entered-in-error", "unknown"},
		"MedicationRequest": {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"},
		"Task":              {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold", "failed", "completed", "entered-in-error"},
	}
	intents = map[string][]string{
		"MedicationRequest": {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"},
		"Task":              {"unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"},
	}
)

// validate checks res's basic shape. Called for every write.
func validate(typ string, res map[string]any) *Outcome {
	if !typeRE.MatchString(typ) {
		return outcome(http.StatusBadRequest, "invalid", "Missing or invalid resourceType")
	}
	if id, ok := res["id"]; ok {
		if s, _ := id.(string); !idRE.MatchString(s) {
			return outcome(http.StatusBadRequest, "invalid", "Invalid resource id", typ+".id")
		}
	}
	if typ == "MedicationRequest" {
		_, cc := res["medicationCodeableConcept"]
		_, rf := res["medicationReference"]
		if !cc && !rf {
			return outcome(http.StatusBadRequest, "required", "MedicationRequest.medication[x]: minimum required = 1, but only found 0", typ+".medication[x]")
		}
	}
	for _, f := range required[typ] {
		if v, ok := res[f]; !ok || v == nil {
			return outcome(http.StatusBadRequest, "required", fmt.Sprintf("%s.%s: minimum required = 1, but only found 0", typ, f), typ+"."+f)
		}
	}
	if oo := checkCode(typ, res, "status", statuses[typ]); oo != nil {
		return oo
	}
	if oo := checkCode(typ, res, "intent", intents[typ]); oo != nil {
		return oo
	}
	if ids, ok := res["identifier"]; ok {
		list, _ := ids.([]any)
		if list == nil {
			return outcome(http.StatusBadRequest, "structure", "identifier must be an array", typ+".identifier")
		}
	}
	return nil
}

func checkCode(typ string, res map[string]any, field string, allowed []string) *Outcome {
	v, ok := res[field]
	if !ok || allowed == nil {
		return nil
	}
	s, _ := v.(string)
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return outcome(http.StatusBadRequest, "code-invalid",
		fmt.Sprintf("The value provided ('%v') was not found in the value set for %s.%s", v, typ, field), typ+"."+field)
}
