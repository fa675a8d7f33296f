package fhir

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clinicbridge/clinicbridge/connectors"
)

func TestParseRef(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]ref{
		"Patient/1":                          {Type: "Patient", ID: "1"},
		"Patient/1/_history/2":               {Type: "Patient", ID: "1", Version: "2"},
		"https://x.example/fhir/Patient/a-b": {Type: "Patient", ID: "a-b"},
		"https://x.example/fhir/Observation/o.1/_history/7?x=1": {Type: "Observation", ID: "o.1", Version: "7"},
	} {
		got, ok := parseRef(in)
		require.True(t, ok, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "#c1", "urn:uuid:1", "Patient", "patient/1", "Patient/a b", "Patient/1/_history/", "%zz"} {
		_, ok := parseRef(in)
		require.False(t, ok, in)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	oo := func(codes ...string) []byte {
		b := `{"resourceType":"OperationOutcome","issue":[`
		for i, c := range codes {
			if i > 0 {
				b += ","
			}
			b += `{"severity":"error","code":"` + c + `","diagnostics":"Patient 'Jane' rejected","expression":["Patient.name[0].family"]}`
		}
		return []byte(b + `]}`)
	}
	for _, tc := range []struct {
		status int
		body   []byte
		class  connectors.Class
	}{
		{400, oo("invalid"), connectors.Permanent},
		{400, oo("invalid", "lock-error"), connectors.Transient},
		{400, oo("incomplete"), connectors.Transient},
		{400, oo("exception"), connectors.Permanent},
		{500, oo("exception"), connectors.Transient},
		{404, oo("not-found"), connectors.Permanent},
		{401, oo("timeout"), connectors.Auth},
		{412, oo("throttled"), connectors.Permanent},
		{503, oo("throttled"), connectors.RateLimited},
		{422, []byte("<html>"), connectors.Permanent},
		{502, nil, connectors.Transient},
	} {
		e := classify(&response{status: tc.status, header: http.Header{}, body: tc.body}, false)
		require.Equal(t, tc.class, e.Class, "%d %s", tc.status, tc.body)
		require.NotContains(t, e.Error(), "Jane")
	}
	e := classify(&response{status: 400, header: http.Header{}, body: oo("invalid")}, false)
	require.Equal(t, "fhir 400 code invalid: error invalid at Patient.name[0].family", e.Error())
	e = classify(&response{status: 400, header: http.Header{}, body: oo("invalid")}, true)
	require.Contains(t, e.Error(), "Patient 'Jane' rejected", "diagnostics kept for searches")
}

func TestEtagVersion(t *testing.T) {
	t.Parallel()
	require.Equal(t, "3", etagVersion(`W/"3"`))
	require.Equal(t, "3", etagVersion(`"3"`))
	require.Empty(t, etagVersion(`W/"a b"`))
}
