package connectors

import gojson "github.com/goccy/go-json"

// UnmarshalJSON decodes a webhook body or a stored event payload, the JSON
// every event pays for on its way in (the source's parse) and out (the
// mapping's input document). It has encoding/json's semantics, which
// FuzzUnmarshalJSONAgreesWithEncodingJSON holds it to: the same documents
// rejected, the same values decoded. It is goccy/go-json because
// encoding/json validates a document in one pass and decodes it in another:
// on a ~1 KB webhook it took 5-6 µs where this takes ~1 µs, a tenth of the
// agent's CPU per event at full load (docs/load.md).
//
// Config files and remote APIs' answers keep encoding/json: they are not
// per event.
func UnmarshalJSON(b []byte, v any) error { return gojson.Unmarshal(b, v) }
