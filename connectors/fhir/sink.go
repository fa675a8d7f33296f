package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/clinicbridge/clinicbridge/connectors"
)

// Actions.
const (
	ActionCreate            = "create"
	ActionCreateIfNoneExist = "create_if_none_exist"
	ActionUpdate            = "update"
	ActionUpsert            = "upsert"
	ActionTransaction       = "transaction"
)

// Control fields a mapped document may carry besides the resource. They
// are removed before the resource is sent.
const (
	// FieldIfNoneExist is create_if_none_exist's search criteria, a query
	// string without `?` (`identifier=http://clinic.example/mrn|123`).
	FieldIfNoneExist = "_if_none_exist"
	// FieldVersion is update's expected current version (If-Match).
	FieldVersion = "_version"
)

func actions() []connectors.Action {
	return []connectors.Action{
		{
			Name: ActionCreate, Required: []string{"resourceType"},
			Doc: "POST [base]/Type with the document as the resource. Not idempotent: a retry after an " +
				"ambiguous failure may create a second resource; prefer create_if_none_exist.",
		},
		{
			Name: ActionCreateIfNoneExist, Required: []string{"resourceType"}, Optional: []string{"identifier", FieldIfNoneExist},
			Idempotent: true,
			Doc: "Conditional create: POST [base]/Type with `If-None-Exist` from `_if_none_exist`, else from the " +
				"resource's first identifier (`identifier=system|value`). 201 (created) and 200 (already there) both succeed.",
		},
		{
			Name: ActionUpdate, Required: []string{"resourceType", "id"}, Optional: []string{FieldVersion, "meta"},
			Idempotent: true,
			// It replaces the resource: an older event must not overwrite a newer one.
			Overwrites: true,
			Doc: "PUT [base]/Type/id. With `_version` (or meta.versionId) it sends `If-Match: W/\"<version>\"`; a " +
				"mismatch (412) is permanent unless the server already holds exactly this content (a retried success).",
		},
		{
			Name: ActionUpsert, Required: []string{"resourceType", "identifier"},
			Idempotent: true,
			Overwrites: true,
			Doc: "Conditional update: PUT [base]/Type?identifier=system|value from the first identifier; no " +
				"match creates (201), one match updates (200), several are a permanent 412.",
		},
		{
			Name: ActionTransaction, Required: []string{"resourceType", "type", "entry"},
			Doc: "POST [base] with the document, a Bundle of type transaction (atomic). Idempotent only as far " +
				"as its entries are conditional (ifNoneExist, conditional PUT).",
		},
	}
}

func permanent(format string, args ...any) *connectors.Error {
	return &connectors.Error{Class: connectors.Permanent, Provider: provider, Msg: fmt.Sprintf(format, args...)}
}

// Do performs one action. Errors are *connectors.Error values whose message
// holds the status, OperationOutcome issue codes, severities and element
// paths: never diagnostics text (servers echo rejected values), the
// document or a URL with its identifier.
func (c *Connector) Do(ctx context.Context, d connectors.Delivery) (connectors.Receipt, error) {
	doc := maps.Clone(d.Document)
	ifNoneExist, hasINE := doc[FieldIfNoneExist]
	version, hasVersion := doc[FieldVersion]
	delete(doc, FieldIfNoneExist)
	delete(doc, FieldVersion)
	rt, _ := doc["resourceType"].(string)
	if !resourceTypeRE.MatchString(rt) {
		return connectors.Receipt{}, permanent("the document has no valid resourceType")
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return connectors.Receipt{}, permanent("the document is not JSON-encodable")
	}
	hdr := http.Header{}
	hdr.Set("Prefer", "return=representation")
	switch d.Action {
	case ActionCreate, "":
		return c.write(ctx, http.MethodPost, c.base+"/"+rt, body, hdr, rt, "")

	case ActionCreateIfNoneExist:
		var crit string
		if hasINE {
			s, ok := ifNoneExist.(string)
			s = strings.TrimPrefix(strings.TrimSpace(s), "?")
			if !ok || s == "" {
				return connectors.Receipt{}, permanent("%s must be a non-empty query string", FieldIfNoneExist)
			}
			if _, err := url.ParseQuery(s); err != nil {
				return connectors.Receipt{}, permanent("%s is not a valid query string", FieldIfNoneExist)
			}
			crit = s
		} else {
			crit, err = identifierCriteria(doc)
			if err != nil {
				return connectors.Receipt{}, permanent("create_if_none_exist: %v (or set %s)", err, FieldIfNoneExist)
			}
		}
		hdr.Set("If-None-Exist", crit)
		return c.write(ctx, http.MethodPost, c.base+"/"+rt, body, hdr, rt, "")

	case ActionUpdate:
		id, _ := doc["id"].(string)
		if !idRE.MatchString(id) {
			return connectors.Receipt{}, permanent("update: the document has no valid id")
		}
		v := ""
		if hasVersion {
			v = scalarString(version)
			if v == "" || !versionRE.MatchString(v) {
				return connectors.Receipt{}, permanent("update: %s is not a version id", FieldVersion)
			}
		} else if meta, ok := doc["meta"].(map[string]any); ok {
			v = scalarString(meta["versionId"])
		}
		if v != "" {
			hdr.Set("If-Match", `W/"`+v+`"`)
		}
		rc, err := c.write(ctx, http.MethodPut, c.base+"/"+rt+"/"+id, body, hdr, rt, id)
		var ce *connectors.Error
		// Some servers answer a version conflict with 409 instead of 412.
		if v != "" && errors.As(err, &ce) && (ce.HTTPStatus == http.StatusPreconditionFailed || ce.HTTPStatus == http.StatusConflict) {
			if rc, ok := c.alreadyApplied(ctx, rt, id, doc); ok {
				return rc, nil
			}
		}
		return rc, err

	case ActionUpsert:
		crit, err := identifierCriteria(doc)
		if err != nil {
			return connectors.Receipt{}, permanent("upsert: %v", err)
		}
		return c.write(ctx, http.MethodPut, c.base+"/"+rt+"?"+crit, body, hdr, rt, "")

	case ActionTransaction:
		if rt != "Bundle" || doc["type"] != "transaction" {
			return connectors.Receipt{}, permanent("transaction: the document must be a Bundle of type transaction")
		}
		resp, err := c.call(ctx, http.MethodPost, c.base, body, hdr)
		if err != nil {
			return connectors.Receipt{}, err
		}
		if resp.status < 200 || resp.status > 299 {
			return connectors.Receipt{}, classify(resp, false)
		}
		return transactionReceipt(resp), nil

	default:
		return connectors.Receipt{}, permanent("unknown action %q", d.Action)
	}
}

func (c *Connector) write(ctx context.Context, method, u string, body []byte, hdr http.Header, rt, id string) (connectors.Receipt, error) {
	resp, err := c.call(ctx, method, u, body, hdr)
	if err != nil {
		return connectors.Receipt{}, err
	}
	if resp.status < 200 || resp.status > 299 {
		return connectors.Receipt{}, classify(resp, false)
	}
	return receipt(resp, rt, id), nil
}

// identifierCriteria is `identifier=system|value` from the first
// identifier, query-encoded.
func identifierCriteria(doc map[string]any) (string, error) {
	ids, _ := doc["identifier"].([]any)
	if len(ids) == 0 {
		return "", errors.New("the resource has no identifier")
	}
	first, _ := ids[0].(map[string]any)
	sys, _ := first["system"].(string)
	val, _ := first["value"].(string)
	if sys == "" || val == "" {
		return "", errors.New("the first identifier needs a system and a value")
	}
	return url.Values{"identifier": {sys + "|" + val}}.Encode(), nil
}

func scalarString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case int, int64, float64:
		return fmt.Sprint(v)
	}
	return ""
}

// receipt reads `Type/id/_history/version` from Location, else from the
// returned resource, else from ETag and the known id.
func receipt(resp *response, rt, id string) connectors.Receipt {
	rc := connectors.Receipt{Status: strconv.Itoa(resp.status)}
	loc, locOK := parseRef(resp.header.Get("Location"))
	if locOK && loc.Version != "" {
		rc.ExternalID = loc.key() + "/_history/" + loc.Version
		return rc
	}
	if h, err := parseHead(resp.body); err == nil && idRE.MatchString(h.ID) && h.ResourceType == rt {
		if h.Meta.VersionID != "" {
			rc.ExternalID = rt + "/" + h.ID + "/_history/" + h.Meta.VersionID
			return rc
		}
		id = h.ID
	}
	if locOK {
		id = loc.ID
	}
	if id == "" {
		return rc
	}
	rc.ExternalID = rt + "/" + id
	if v := etagVersion(resp.header.Get("ETag")); v != "" {
		rc.ExternalID += "/_history/" + v
	}
	return rc
}

// etagVersion reads W/"3" (or "3") as 3.
func etagVersion(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	s = strings.Trim(s, `"`)
	if idRE.MatchString(s) {
		return s
	}
	return ""
}

// transactionReceipt lists every entry's location, comma-separated.
func transactionReceipt(resp *response) connectors.Receipt {
	rc := connectors.Receipt{Status: strconv.Itoa(resp.status)}
	var b struct {
		Entry []struct {
			Response struct {
				Location string `json:"location"`
				Etag     string `json:"etag"`
			} `json:"response"`
		} `json:"entry"`
	}
	if json.Unmarshal(resp.body, &b) != nil {
		return rc
	}
	var ids []string
	for _, e := range b.Entry {
		r, ok := parseRef(e.Response.Location)
		if !ok {
			continue
		}
		id := r.key()
		if v := r.Version; v != "" {
			id += "/_history/" + v
		} else if v := etagVersion(e.Response.Etag); v != "" {
			id += "/_history/" + v
		}
		ids = append(ids, id)
	}
	rc.ExternalID = strings.Join(ids, ",")
	return rc
}

// alreadyApplied checks, after a 412 on a versioned update, whether the
// server's current version has exactly the content sent (ignoring meta and
// text): then an earlier attempt, whose answer was lost, succeeded.
func (c *Connector) alreadyApplied(ctx context.Context, rt, id string, doc map[string]any) (connectors.Receipt, bool) {
	resp, err := c.call(ctx, http.MethodGet, c.base+"/"+rt+"/"+id, nil, nil)
	if err != nil || resp.status != http.StatusOK {
		return connectors.Receipt{}, false
	}
	var current map[string]any
	if json.Unmarshal(resp.body, &current) != nil {
		return connectors.Receipt{}, false
	}
	sent, err := json.Marshal(doc)
	if err != nil {
		return connectors.Receipt{}, false
	}
	var mine map[string]any
	if json.Unmarshal(sent, &mine) != nil {
		return connectors.Receipt{}, false
	}
	for _, k := range []string{"meta", "text"} {
		delete(current, k)
		delete(mine, k)
	}
	if !reflect.DeepEqual(current, mine) {
		return connectors.Receipt{}, false
	}
	return receipt(resp, rt, id), true
}
