package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// head is the part of a resource that identifies one version of it.
type head struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		VersionID   string `json:"versionId"`
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
}

// idRE is FHIR's id datatype.
var idRE = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// versionRE bounds what may go into an event id from meta.versionId.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9\-._:+]{1,128}$`)

func parseHead(raw []byte) (head, error) {
	var h head
	if err := json.Unmarshal(raw, &h); err != nil {
		return head{}, errors.New("the resource is not a JSON object with FHIR's shape")
	}
	if !resourceTypeRE.MatchString(h.ResourceType) {
		return head{}, errors.New("the resource has no valid resourceType")
	}
	return h, nil
}

// parseInstant reads a FHIR instant or dateTime.
func parseInstant(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// Event type suffixes.
const (
	Create = "create"
	Update = "update"
)

// EventFor builds the event for one version of a resource, the same for a
// notification and a listing: ID `Type/id/_history/<meta.versionId>` (or
// meta.lastUpdated when the server keeps no version ids), Type `Type.create`
// for version "1" and `Type.update` otherwise (always update without a
// versionId), Key `Type/id`, OccurredAt meta.lastUpdated, Payload the
// resource as received.
func EventFor(raw []byte) (connectors.Event, error) {
	h, err := parseHead(raw)
	if err != nil {
		return connectors.Event{}, err
	}
	if !idRE.MatchString(h.ID) {
		return connectors.Event{}, errors.New("the " + h.ResourceType + " has no valid id")
	}
	at, okTime := parseInstant(h.Meta.LastUpdated)
	version := h.Meta.VersionID
	switch {
	case version != "" && !versionRE.MatchString(version):
		return connectors.Event{}, errors.New("the " + h.ResourceType + " has an unusable meta.versionId")
	case version == "" && !okTime:
		return connectors.Event{}, errors.New("the " + h.ResourceType + " has neither meta.versionId nor meta.lastUpdated")
	case version == "":
		version = at.UTC().Format(time.RFC3339Nano)
	}
	kind := Update
	if h.Meta.VersionID == "1" {
		kind = Create
	}
	key := h.ResourceType + "/" + h.ID
	return connectors.Event{
		ID:         key + "/_history/" + version,
		Type:       h.ResourceType + "." + kind,
		Key:        key,
		OccurredAt: at,
		Payload:    json.RawMessage(compactJSON(raw)),
	}, nil
}

func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return bytes.Clone(raw)
	}
	return b.Bytes()
}

// ref is a parsed resource reference: Type/id with an optional version.
type ref struct {
	Type, ID, Version string
}

func (r ref) key() string { return r.Type + "/" + r.ID }

// parseRef reads a relative (`Patient/1`, `Patient/1/_history/2`) or
// absolute (`https://x/fhir/Patient/1[/_history/2]`) reference. Only the
// trailing path segments are used: reads always go to base_url.
func parseRef(s string) (ref, bool) {
	if s == "" || strings.HasPrefix(s, "#") || strings.HasPrefix(s, "urn:") {
		return ref{}, false
	}
	if u, err := url.Parse(s); err == nil {
		s = u.Path
	} else {
		return ref{}, false
	}
	seg := strings.Split(strings.Trim(s, "/"), "/")
	var r ref
	switch n := len(seg); {
	case n >= 4 && seg[n-2] == "_history":
		r = ref{Type: seg[n-4], ID: seg[n-3], Version: seg[n-1]}
	case n >= 2:
		r = ref{Type: seg[n-2], ID: seg[n-1]}
	default:
		return ref{}, false
	}
	if !resourceTypeRE.MatchString(r.Type) || !idRE.MatchString(r.ID) || (r.Version != "" && !idRE.MatchString(r.Version)) {
		return ref{}, false
	}
	return r, true
}
